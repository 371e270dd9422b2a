//! Statements the services logged as slow while a rate ran. sqlx warns about every statement
//! past its 1 s threshold; on a checkout path of sub-millisecond statements, a burst of them is
//! the sign of a disk stall (COMMITs waiting on fsync), which disturbs every figure of that
//! window. The report says so beside the rate instead of leaving it to be found in the logs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The message sqlx logs a slow statement with.
const SLOW_STATEMENT: &str = "slow statement";

/// How many slow statements the services logged, and the slowest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SlowStatements {
    pub count: usize,
    pub slowest_s: f64,
}

impl SlowStatements {
    /// Counts the slow-statement lines among `lines` (the services' JSON log lines).
    pub fn among<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut found = Self::default();
        for line in lines {
            if !line.contains(SLOW_STATEMENT) {
                continue;
            }
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let is_slow = entry
                .get("message")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|message| message.starts_with(SLOW_STATEMENT));
            if is_slow {
                found.count += 1;
                let elapsed = entry
                    .get("elapsed_secs")
                    .and_then(serde_json::Value::as_f64)
                    .unwrap_or(0.0);
                found.slowest_s = found.slowest_s.max(elapsed);
            }
        }
        found
    }

    fn add(&mut self, other: Self) {
        self.count += other.count;
        self.slowest_s = self.slowest_s.max(other.slowest_s);
    }
}

/// Where each log file of a directory ended when a window began; what is written after it
/// belongs to the window.
#[derive(Debug, Clone, Default)]
pub struct LogMarks {
    ends: BTreeMap<PathBuf, u64>,
    dir: PathBuf,
}

impl LogMarks {
    /// Marks the end of every `*.log` file in `dir` (none when the directory cannot be read:
    /// the window then counts whole files that appear later).
    pub fn now(dir: &Path) -> Self {
        let ends = log_files(dir)
            .into_iter()
            .filter_map(|path| {
                let length = std::fs::metadata(&path).ok()?.len();
                Some((path, length))
            })
            .collect();
        Self {
            ends,
            dir: dir.to_owned(),
        }
    }

    /// The slow statements logged since the marks were taken. A file shorter than its mark was
    /// replaced, and is read whole.
    pub fn slow_statements_since(&self) -> SlowStatements {
        let mut found = SlowStatements::default();
        for path in log_files(&self.dir) {
            let Ok(mut file) = std::fs::File::open(&path) else {
                continue;
            };
            let length = file.metadata().map(|m| m.len()).unwrap_or(0);
            let from = self
                .ends
                .get(&path)
                .copied()
                .filter(|&end| end <= length)
                .unwrap_or(0);
            if file.seek(SeekFrom::Start(from)).is_err() {
                continue;
            }
            let lines: Vec<String> = BufReader::new(file)
                .lines()
                .map_while(Result::ok)
                .filter(|line| line.contains(SLOW_STATEMENT))
                .collect();
            found.add(SlowStatements::among(lines.iter().map(String::as_str)));
        }
        found
    }
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOW: &str = r#"{"timestamp":"2026-12-07T14:06:14.119354Z","level":"WARN","message":"slow statement: execution time exceeded alert threshold","summary":"COMMIT","elapsed":"1.638140941s","elapsed_secs":1.638140941,"slow_threshold":"1s","target":"sqlx::query"}"#;
    const SLOWER: &str = r#"{"level":"WARN","message":"slow statement: execution time exceeded alert threshold","elapsed_secs":2.5}"#;
    const OTHER: &str =
        r#"{"level":"INFO","message":"e-mail sent","subject":"about a slow statement"}"#;

    #[test]
    fn only_sqlx_slow_statement_lines_count_and_the_slowest_is_kept() {
        let found = SlowStatements::among([SLOW, OTHER, "not json: slow statement", SLOWER]);
        assert_eq!(
            found,
            SlowStatements {
                count: 2,
                slowest_s: 2.5
            }
        );
    }

    #[test]
    fn only_what_is_written_after_the_marks_counts() {
        let dir = std::env::temp_dir().join(format!("bazaar-stalls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("order.log");
        std::fs::write(&log, format!("{SLOWER}\n")).expect("write");
        std::fs::write(dir.join("notes.txt"), format!("{SLOWER}\n")).expect("write");
        let marks = LogMarks::now(&dir);
        assert_eq!(marks.slow_statements_since().count, 0);

        let mut appended = std::fs::read_to_string(&log).expect("read");
        appended.push_str(&format!("{OTHER}\n{SLOW}\n"));
        std::fs::write(&log, appended).expect("append");
        std::fs::write(dir.join("payment.log"), format!("{SLOW}\n")).expect("new file");
        let found = marks.slow_statements_since();
        std::fs::remove_dir_all(&dir).expect("clean up");
        assert_eq!(found.count, 2, "the appended line and the new file's");
        assert!((found.slowest_s - 1.638140941).abs() < 1e-9);
    }
}
