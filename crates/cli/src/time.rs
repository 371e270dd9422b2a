//! `--since` and `--older-than` values, and durations as people read them.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Where reading starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// The oldest message still in each partition.
    Beginning,
    /// The first message produced at or after this time.
    Time(DateTime<Utc>),
    /// This offset in every partition (clamped to what the partition holds).
    Offset(i64),
}

impl Since {
    /// `beginning`/`earliest`, an RFC 3339 time (`2026-11-26T10:00:00Z`), a UTC date or
    /// date-time without zone (`2026-11-26`, `2026-11-26 10:00`), a duration back from now
    /// (`15m`, `2h 30m`, `1day`, optionally followed by `ago`), or, where `offsets` is true, a
    /// plain offset (`1200`).
    pub fn parse(text: &str, offsets: bool, now: DateTime<Utc>) -> Result<Self, String> {
        let text = text.trim();
        if matches!(text, "beginning" | "earliest" | "start") {
            return Ok(Self::Beginning);
        }
        if let Ok(offset) = text.parse::<i64>() {
            return if offsets && offset >= 0 {
                Ok(Self::Offset(offset))
            } else {
                Err(format!(
                    "{text:?} is a bare number; give a time (`2026-11-26T10:00:00Z`) or a \
                     duration with a unit (`{text}m`)"
                ))
            };
        }
        if let Ok(time) = DateTime::parse_from_rfc3339(text) {
            return Ok(Self::Time(time.with_timezone(&Utc)));
        }
        for format in [
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%d %H:%M",
            "%Y-%m-%dT%H:%M",
        ] {
            if let Ok(time) = NaiveDateTime::parse_from_str(text, format) {
                return Ok(Self::Time(time.and_utc()));
            }
        }
        if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            return Ok(Self::Time(
                date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
            ));
        }
        let ago = text.strip_suffix("ago").unwrap_or(text).trim();
        match humantime::parse_duration(ago) {
            Ok(duration) => {
                let back = chrono::Duration::from_std(duration)
                    .map_err(|_| format!("{text:?} is too far back"))?;
                Ok(Self::Time(now - back))
            }
            Err(_) => Err(format!(
                "cannot read {text:?} as a start: use `beginning`, a time such as \
                 2026-11-26T10:00:00Z, or a duration back from now such as 15m{}",
                if offsets { ", or an offset" } else { "" }
            )),
        }
    }
}

/// Parses a duration such as `5m`, `90s`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("cannot read {text:?} as a duration (e.g. 5m, 90s): {error}"))
}

/// A compact duration: `850ms`, `4.2s`, `3m05s`, `2h07m`, `3d04h`.
pub fn short(duration: Duration) -> String {
    let millis = duration.as_millis();
    let seconds = duration.as_secs();
    if millis < 1_000 {
        format!("{millis}ms")
    } else if seconds < 60 {
        format!("{:.1}s", duration.as_secs_f64())
    } else if seconds < 3_600 {
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    } else if seconds < 86_400 {
        format!("{}h{:02}m", seconds / 3_600, (seconds % 3_600) / 60)
    } else {
        format!("{}d{:02}h", seconds / 86_400, (seconds % 86_400) / 3_600)
    }
}

/// `short` of a signed chrono duration (negative when clocks disagree).
pub fn short_signed(duration: chrono::Duration) -> String {
    match duration.to_std() {
        Ok(positive) => short(positive),
        Err(_) => format!("-{}", short((-duration).to_std().unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn at(text: &str) -> Since {
        Since::Time(
            DateTime::parse_from_rfc3339(text)
                .expect("time")
                .with_timezone(&Utc),
        )
    }

    #[test]
    fn since_reads_times_durations_offsets_and_the_beginning() {
        let parse = |text| Since::parse(text, true, now());
        assert_eq!(parse("beginning"), Ok(Since::Beginning));
        assert_eq!(
            parse("2026-11-26T10:00:00Z"),
            Ok(at("2026-11-26T10:00:00Z"))
        );
        assert_eq!(
            parse("2026-11-26T11:00:00+01:00"),
            Ok(at("2026-11-26T10:00:00Z"))
        );
        assert_eq!(parse("2026-11-26 10:30"), Ok(at("2026-11-26T10:30:00Z")));
        assert_eq!(parse("2026-11-25"), Ok(at("2026-11-25T00:00:00Z")));
        assert_eq!(parse("15m"), Ok(at("2026-11-26T11:45:00Z")));
        assert_eq!(parse("2h 30m ago"), Ok(at("2026-11-26T09:30:00Z")));
        assert_eq!(parse("1200"), Ok(Since::Offset(1200)));
        assert!(parse("yesterday-ish").is_err());
    }

    #[test]
    fn a_bare_number_is_refused_where_offsets_make_no_sense() {
        let error = Since::parse("15", false, now()).expect_err("ambiguous");
        assert!(error.contains("15m"), "{error}");
    }

    #[test]
    fn durations_print_compactly() {
        assert_eq!(short(Duration::from_millis(850)), "850ms");
        assert_eq!(short(Duration::from_millis(4_210)), "4.2s");
        assert_eq!(short(Duration::from_secs(185)), "3m05s");
        assert_eq!(short(Duration::from_secs(7_620)), "2h07m");
        assert_eq!(short(Duration::from_secs(273_600)), "3d04h");
        assert_eq!(short_signed(chrono::Duration::milliseconds(-20)), "-20ms");
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    }
}
