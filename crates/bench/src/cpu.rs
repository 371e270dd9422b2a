//! CPU time of the stack's processes, read from `/proc/<pid>/stat` (utime + stime, every
//! thread), so that the cost per order is a measured figure rather than a guess.
//!
//! PostgreSQL is a postmaster and one process per connection. Its CPU is the sum over the
//! postmaster and its children, attributed by what each child is: a backend of a service's
//! database (`bazaar_order` …) counts for that service's database, the server's own processes
//! (checkpointer, WAL writer, autovacuum, …) count as the server, and backends of any other
//! database (other people's tests on a shared server, this benchmark's own reads) are reported
//! apart and left out of the stack's total. A process that appeared between the two sample
//! points (a connection a pool opened under the load) counts whole; one that also ended in
//! between (an autovacuum worker, a connection opened and closed) is missed. Before this was
//! counted, the backends a pool opened under the load were missed too: at 50/s that left out
//! about half of the order database's CPU.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use procfs::Current as _;
use procfs::process::{FDTarget, Process};

/// PostgreSQL rows that are not part of the stack (left out of the total).
pub const PG_OTHER: &str = "PostgreSQL: other databases (not counted)";
/// PostgreSQL's own processes: postmaster, checkpointer, WAL writer, autovacuum, …
pub const PG_SERVER: &str = "PostgreSQL: server processes";

/// One process to follow, by a label.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub label: String,
    pub pid: i32,
    /// Counted in the stack's total (the payment simulator and the load generator are not).
    pub in_total: bool,
}

/// What to sample: single processes, and optionally PostgreSQL's process tree.
#[derive(Debug, Clone)]
pub struct Probe {
    pub processes: Vec<Tracked>,
    pub postmaster: Option<i32>,
    /// Service databases whose backends are named after the service (`bazaar_<name>`).
    pub databases: Vec<String>,
    ticks_per_second: f64,
}

/// CPU ticks per process at one instant: pid → (label, ticks).
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    per_pid: HashMap<i32, (String, u64)>,
}

/// CPU used between two samples.
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    pub seconds: f64,
    /// Label → CPU seconds.
    pub by_label: BTreeMap<String, f64>,
}

impl CpuUse {
    /// CPU seconds of everything counted in the stack's total.
    pub fn total(&self) -> f64 {
        self.by_label
            .iter()
            .filter(|(label, _)| counts_in_total(label))
            .map(|(_, seconds)| seconds)
            .sum()
    }
}

/// Whether a label's CPU belongs to the stack's total.
pub fn counts_in_total(label: &str) -> bool {
    label != PG_OTHER && !label.contains("not counted")
}

impl Probe {
    pub fn new(processes: Vec<Tracked>, postmaster: Option<i32>, databases: Vec<String>) -> Self {
        Self {
            processes,
            postmaster,
            databases,
            ticks_per_second: procfs::ticks_per_second() as f64,
        }
    }

    pub fn sample(&self) -> Sample {
        let mut per_pid = HashMap::new();
        for tracked in &self.processes {
            if let Some(ticks) = ticks_of(tracked.pid) {
                let label = if tracked.in_total {
                    tracked.label.clone()
                } else {
                    format!("{} (not counted)", tracked.label)
                };
                per_pid.insert(tracked.pid, (label, ticks));
            }
        }
        if let Some(postmaster) = self.postmaster {
            if let Some(ticks) = ticks_of(postmaster) {
                per_pid.insert(postmaster, (PG_SERVER.to_owned(), ticks));
            }
            if let Ok(all) = procfs::process::all_processes() {
                for process in all.flatten() {
                    let Ok(stat) = process.stat() else { continue };
                    if stat.ppid != postmaster {
                        continue;
                    }
                    let cmdline = process.cmdline().unwrap_or_default().join(" ");
                    let label = self.postgres_label(&cmdline);
                    per_pid.insert(process.pid, (label, stat.utime + stat.stime));
                }
            }
        }
        Sample {
            at: Instant::now(),
            per_pid,
        }
    }

    /// CPU used between `from` and `to`, by label. A process only `to` has started after `from`
    /// and counts whole; one only `from` has ended in between and is missed.
    pub fn between(&self, from: &Sample, to: &Sample) -> CpuUse {
        let mut by_label: BTreeMap<String, f64> = BTreeMap::new();
        for tracked in &self.processes {
            // Every followed process gets a row, even one that used nothing.
            let label = if tracked.in_total {
                tracked.label.clone()
            } else {
                format!("{} (not counted)", tracked.label)
            };
            by_label.entry(label).or_default();
        }
        for (pid, (label, end)) in &to.per_pid {
            let start = match from.per_pid.get(pid) {
                Some((start_label, start)) if start_label == label => *start,
                // The pid was reused by another kind of process: it started in between.
                Some(_) | None => 0,
            };
            *by_label.entry(label.clone()).or_default() +=
                end.saturating_sub(start) as f64 / self.ticks_per_second;
        }
        CpuUse {
            seconds: to.at.duration_since(from.at).as_secs_f64(),
            by_label,
        }
    }

    /// `postgres: 15/main: bazaar_order bazaar_order 127.0.0.1(5555) idle` is a backend of
    /// the order database; `postgres: 15/main: checkpointer` is the server's own.
    fn postgres_label(&self, cmdline: &str) -> String {
        let rest = cmdline.trim().trim_start_matches("postgres:").trim();
        // Debian names the cluster first ("15/main: ").
        let rest = match rest.split_once(": ") {
            Some((cluster, rest)) if cluster.contains('/') => rest,
            _ => rest,
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let is_backend = words.len() >= 3
            && (words[2].contains('(')
                || words[2] == "[local]"
                || words[2].parse::<std::net::IpAddr>().is_ok());
        if !is_backend {
            return PG_SERVER.to_owned();
        }
        let database = words[1];
        if self.databases.iter().any(|name| name == database) {
            format!("PostgreSQL: {database}")
        } else {
            PG_OTHER.to_owned()
        }
    }
}

fn ticks_of(pid: i32) -> Option<u64> {
    let stat = Process::new(pid).ok()?.stat().ok()?;
    Some(stat.utime + stat.stime)
}

/// The process listening on a local TCP port (IPv4 or IPv6), found through its socket inode.
pub fn pid_listening_on(port: u16) -> Option<i32> {
    let myself = Process::myself().ok()?;
    let mut inodes = Vec::new();
    for entries in [myself.tcp(), myself.tcp6()].into_iter().flatten() {
        for entry in entries {
            if entry.state == procfs::net::TcpState::Listen && port_of(&entry.local_address) == port
            {
                inodes.push(entry.inode);
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let all = procfs::process::all_processes().ok()?;
    for process in all.flatten() {
        let Ok(fds) = process.fd() else { continue };
        for fd in fds.flatten() {
            if let FDTarget::Socket(inode) = fd.target
                && inodes.contains(&inode)
            {
                return Some(process.pid);
            }
        }
    }
    None
}

fn port_of(address: &SocketAddr) -> u16 {
    address.port()
}

/// Whether a process is alive.
pub fn alive(pid: i32) -> bool {
    Process::new(pid).is_ok_and(|process| process.is_alive())
}

/// One-minute load average and the number of running rustc processes: the machine's other
/// work, noted beside the figures.
pub fn machine_load() -> (f64, usize) {
    let load = procfs::LoadAverage::current().map_or(f64::NAN, |load| f64::from(load.one));
    let rustc = procfs::process::all_processes()
        .map(|all| {
            all.flatten()
                .filter(|process| process.stat().is_ok_and(|stat| stat.comm == "rustc"))
                .count()
        })
        .unwrap_or(0);
    (load, rustc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> Probe {
        Probe::new(Vec::new(), None, vec!["bazaar_order".into()])
    }

    #[test]
    fn backends_are_attributed_to_their_database() {
        let probe = probe();
        assert_eq!(
            probe.postgres_label(
                "postgres: 15/main: bazaar_order bazaar_order 127.0.0.1(41234) idle"
            ),
            "PostgreSQL: bazaar_order"
        );
        assert_eq!(
            probe.postgres_label("postgres: 15/main: bazaar_admin bazaar_test_x 127.0.0.1(1) idle"),
            PG_OTHER
        );
        assert_eq!(
            probe.postgres_label("postgres: 15/main: checkpointer "),
            PG_SERVER
        );
        assert_eq!(
            probe.postgres_label("postgres: 15/main: autovacuum launcher "),
            PG_SERVER
        );
    }

    #[test]
    fn a_process_started_in_between_counts_whole_and_one_that_ended_is_missed() {
        let probe = probe();
        let order = "PostgreSQL: bazaar_order".to_owned();
        let sample = |per_pid: &[(i32, u64)]| Sample {
            at: Instant::now(),
            per_pid: per_pid
                .iter()
                .map(|(pid, ticks)| (*pid, (order.clone(), *ticks)))
                .collect(),
        };
        let ticks = probe.ticks_per_second;
        // 1 ran all along, 2 ended in between, 3 started in between.
        let from = sample(&[(1, 100), (2, 50)]);
        let to = sample(&[(1, 100 + ticks as u64), (3, 2 * ticks as u64)]);
        let used = probe.between(&from, &to);
        assert!((used.by_label[&order] - 3.0).abs() < 1e-9, "{used:?}");
    }

    #[test]
    fn this_process_is_sampled() {
        let me = std::process::id() as i32;
        let probe = Probe::new(
            vec![Tracked {
                label: "me".into(),
                pid: me,
                in_total: true,
            }],
            None,
            Vec::new(),
        );
        let from = probe.sample();
        let mut x = 0u64;
        for n in 0..20_000_000u64 {
            x = x.wrapping_add(n * n);
        }
        assert!(x > 0);
        let to = probe.sample();
        let used = probe.between(&from, &to);
        assert!(used.by_label.contains_key("me"));
        assert!(used.total() >= 0.0);
    }
}
