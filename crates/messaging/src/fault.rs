//! Opt-in crash points for fault-injection tests (`tests/chaos`).
//!
//! The windows that at-least-once delivery has to survive are narrow: a relay that dies after
//! Kafka acknowledged a row but before marking it published, a consumer that dies after its
//! transaction committed but before its offset was stored. Killing a process from outside
//! almost never lands there, so the runtime can exit at exactly those points, with a given
//! probability per pass, when an environment variable asks for it:
//!
//! | Variable | Where the process exits | Exit code |
//! |---|---|---|
//! | `BAZAAR_FAULT_RELAY_EXIT_AFTER_ACK` | relay: Kafka acknowledged a batch, its rows not yet marked | 86 |
//! | `BAZAAR_FAULT_CONSUMER_EXIT_AFTER_COMMIT` | consumer: a message's transaction committed, its offset not yet stored | 87 |
//!
//! The value is a probability from 0 to 1 (`0.05`: one pass in twenty). Unset, empty or `0`,
//! the point is disabled: the variable is read once when the relay or consumer is built, and a
//! disabled point costs one branch per pass. The exit skips every destructor and flush, as a
//! crash would.

/// Read by the relay.
pub const RELAY_EXIT_AFTER_ACK: &str = "BAZAAR_FAULT_RELAY_EXIT_AFTER_ACK";
/// Read by the idempotent consumer.
pub const CONSUMER_EXIT_AFTER_COMMIT: &str = "BAZAAR_FAULT_CONSUMER_EXIT_AFTER_COMMIT";

/// Exit code of a relay crash point, so a supervisor can tell it from a real failure.
pub const RELAY_EXIT_CODE: i32 = 86;
/// Exit code of a consumer crash point.
pub const CONSUMER_EXIT_CODE: i32 = 87;

/// What a process logs just before a fault point exits it (the chaos harness reads it).
pub const EXITING_NOW: &str = "fault injection: exiting now";

/// A point where the process may exit on purpose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrashPoint {
    name: &'static str,
    exit_code: i32,
    probability: Option<f64>,
}

impl CrashPoint {
    /// Never fires.
    pub const fn disabled(name: &'static str, exit_code: i32) -> Self {
        Self {
            name,
            exit_code,
            probability: None,
        }
    }

    /// Configured from the environment variable `name`.
    pub fn from_env(name: &'static str, exit_code: i32) -> Self {
        let value = std::env::var(name).unwrap_or_default();
        match parse_probability(&value) {
            Ok(probability) => {
                if let Some(p) = probability {
                    tracing::warn!(
                        point = name,
                        probability = p,
                        "fault injection enabled: this process will exit on purpose"
                    );
                }
                Self {
                    name,
                    exit_code,
                    probability,
                }
            }
            Err(reason) => {
                tracing::error!(point = name, value, %reason, "ignoring the fault injection setting");
                Self::disabled(name, exit_code)
            }
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.probability.is_some()
    }

    /// Exits the process with the point's exit code, with the configured probability.
    pub fn maybe_exit(&self) {
        let Some(probability) = self.probability else {
            return;
        };
        if draw() < probability {
            tracing::error!(
                point = self.name,
                exit_code = self.exit_code,
                "{EXITING_NOW}"
            );
            std::process::exit(self.exit_code);
        }
    }
}

/// `None` for a disabled point (unset, empty or zero).
fn parse_probability(value: &str) -> Result<Option<f64>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let probability: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a probability"))?;
    if !(0.0..=1.0).contains(&probability) {
        return Err(format!("{probability} is not between 0 and 1"));
    }
    Ok((probability > 0.0).then_some(probability))
}

/// A uniform number in [0, 1), from the random bits of a v4 UUID (no RNG crate needed for a
/// test-only coin flip). Its first 48 bits are random; the version nibble comes after them.
fn draw() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() >> 80;
    bits as f64 / (1u64 << 48) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_are_read_strictly() {
        assert_eq!(parse_probability(""), Ok(None));
        assert_eq!(parse_probability("0"), Ok(None));
        assert_eq!(parse_probability(" 0.25 "), Ok(Some(0.25)));
        assert_eq!(parse_probability("1"), Ok(Some(1.0)));
        assert!(parse_probability("1.5").is_err());
        assert!(parse_probability("-0.1").is_err());
        assert!(parse_probability("often").is_err());
    }

    #[test]
    fn a_disabled_point_never_exits() {
        let point = CrashPoint::disabled("TEST", 99);
        assert!(!point.is_enabled());
        for _ in 0..1000 {
            point.maybe_exit();
        }
    }

    #[test]
    fn an_unset_variable_disables_the_point() {
        let point = CrashPoint::from_env("BAZAAR_FAULT_NOT_SET_ANYWHERE", 99);
        assert!(!point.is_enabled());
    }

    #[test]
    fn draws_are_spread_over_the_unit_interval() {
        let draws: Vec<f64> = (0..2000).map(|_| draw()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let below_half = draws.iter().filter(|d| **d < 0.5).count();
        assert!((800..1200).contains(&below_half), "{below_half}");
    }
}
