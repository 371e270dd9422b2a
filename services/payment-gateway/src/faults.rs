//! Fault injection: how slow and how unreliable the simulated processor is. The settings come
//! from configuration and can be replaced at runtime (`PUT /_sim/faults`); the decisions are
//! pure functions of the settings and uniform random rolls, so they are tested without timing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSettings {
    /// Added to every `/v1` request before anything else happens.
    pub latency_ms: u64,
    /// A uniformly random extra delay of up to this much.
    pub latency_jitter_ms: u64,
    /// Share of `/v1` requests answered 500 before they take effect.
    pub failure_rate: f64,
    /// Share of `/v1` requests held open, without taking effect, for `timeout_hold_ms`.
    pub timeout_rate: f64,
    /// Share of POSTs that take effect (the charge or refund is applied and stored under its
    /// idempotency key) but whose answer is then lost as with `timeout_rate`.
    pub timeout_after_charge_rate: f64,
    pub timeout_hold_ms: u64,
    /// What a held request finally gets.
    pub timeout_mode: TimeoutMode,
}

impl Default for FaultSettings {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            latency_jitter_ms: 0,
            failure_rate: 0.0,
            timeout_rate: 0.0,
            timeout_after_charge_rate: 0.0,
            // Longer than the payment service's default client timeout (3 s), so a held request
            // looks to it like a processor that never answered.
            timeout_hold_ms: 5_000,
            timeout_mode: TimeoutMode::GatewayTimeout,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutMode {
    /// Answer 504, as a load balancer in front of a stuck processor would.
    GatewayTimeout,
    /// Close the connection without a complete answer.
    Drop,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{name} must be a number between 0 and 1, got {value}")]
pub struct InvalidRate {
    pub name: &'static str,
    pub value: f64,
}

impl FaultSettings {
    pub fn validate(&self) -> Result<(), InvalidRate> {
        for (name, value) in [
            ("failure_rate", self.failure_rate),
            ("timeout_rate", self.timeout_rate),
            ("timeout_after_charge_rate", self.timeout_after_charge_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(InvalidRate { name, value });
            }
        }
        Ok(())
    }

    /// How long to wait before handling a request; `roll` is uniform in [0, 1).
    pub fn latency(&self, roll: f64) -> Duration {
        // Truncating to whole milliseconds is intended.
        let jitter = (roll * (self.latency_jitter_ms as f64 + 1.0)) as u64;
        Duration::from_millis(
            self.latency_ms
                .saturating_add(jitter.min(self.latency_jitter_ms)),
        )
    }

    /// What happens to a request before it takes effect. A timeout is rolled first, so with
    /// both rates at 1 every request times out.
    pub fn before_effect(&self, timeout_roll: f64, failure_roll: f64) -> BeforeEffect {
        if timeout_roll < self.timeout_rate {
            BeforeEffect::Timeout
        } else if failure_roll < self.failure_rate {
            BeforeEffect::Fail
        } else {
            BeforeEffect::Proceed
        }
    }

    /// Whether the answer to a request that already took effect is lost.
    pub fn lose_answer(&self, roll: f64) -> bool {
        roll < self.timeout_after_charge_rate
    }

    pub fn timeout_hold(&self) -> Duration {
        Duration::from_millis(self.timeout_hold_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeforeEffect {
    Proceed,
    Fail,
    Timeout,
}

/// Uniform rolls in [0, 1) for fault decisions. SplitMix64 over an atomic counter: lock-free
/// across workers, and statistical quality is all that matters here.
#[derive(Debug)]
pub struct Dice {
    state: AtomicU64,
}

impl Dice {
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    pub fn seeded(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    pub fn from_clock() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        // Only the low bits vary between runs; folding keeps them.
        let seed = (nanos as u64) ^ ((nanos >> 64) as u64) ^ u64::from(std::process::id());
        Self::seeded(seed)
    }

    pub fn roll(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(Self::GAMMA, Ordering::Relaxed)
            .wrapping_add(Self::GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits fill an f64 mantissa exactly, giving a uniform value below 1.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut FaultSettings)) -> FaultSettings {
        let mut settings = FaultSettings::default();
        f(&mut settings);
        settings
    }

    #[test]
    fn no_faults_by_default() {
        let settings = FaultSettings::default();
        assert_eq!(settings.latency(0.99), Duration::ZERO);
        assert_eq!(settings.before_effect(0.0, 0.0), BeforeEffect::Proceed);
        assert!(!settings.lose_answer(0.0));
        assert_eq!(settings.validate(), Ok(()));
    }

    #[test]
    fn rates_of_one_always_fire_and_zero_never() {
        let failing = with(|s| s.failure_rate = 1.0);
        assert_eq!(failing.before_effect(0.5, 0.999_999), BeforeEffect::Fail);
        let timing_out = with(|s| s.timeout_rate = 1.0);
        assert_eq!(
            timing_out.before_effect(0.999_999, 0.0),
            BeforeEffect::Timeout
        );
        let losing = with(|s| s.timeout_after_charge_rate = 1.0);
        assert!(losing.lose_answer(0.999_999));
    }

    #[test]
    fn a_timeout_wins_over_a_failure() {
        let both = with(|s| {
            s.failure_rate = 1.0;
            s.timeout_rate = 1.0;
        });
        assert_eq!(both.before_effect(0.0, 0.0), BeforeEffect::Timeout);
    }

    #[test]
    fn a_rate_fires_for_rolls_below_it() {
        let half = with(|s| s.failure_rate = 0.5);
        assert_eq!(half.before_effect(0.9, 0.49), BeforeEffect::Fail);
        assert_eq!(half.before_effect(0.9, 0.5), BeforeEffect::Proceed);
    }

    #[test]
    fn latency_adds_jitter_within_its_bound() {
        let slow = with(|s| {
            s.latency_ms = 100;
            s.latency_jitter_ms = 50;
        });
        assert_eq!(slow.latency(0.0), Duration::from_millis(100));
        assert_eq!(slow.latency(0.999_999), Duration::from_millis(150));
        let steady = with(|s| s.latency_ms = 100);
        assert_eq!(steady.latency(0.999_999), Duration::from_millis(100));
    }

    #[test]
    fn rates_outside_zero_to_one_are_invalid() {
        let error = with(|s| s.timeout_rate = 1.5)
            .validate()
            .expect_err("1.5 is not a rate");
        assert_eq!(error.name, "timeout_rate");
        assert!(with(|s| s.failure_rate = -0.1).validate().is_err());
        assert!(
            with(|s| s.timeout_after_charge_rate = f64::NAN)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn partial_settings_fill_in_defaults() {
        let settings: FaultSettings =
            serde_json::from_str(r#"{"failure_rate": 0.25, "timeout_mode": "drop"}"#)
                .expect("valid");
        assert_eq!(settings.failure_rate, 0.25);
        assert_eq!(settings.timeout_mode, TimeoutMode::Drop);
        assert_eq!(settings.timeout_hold_ms, 5_000);
        assert!(serde_json::from_str::<FaultSettings>(r#"{"failure": 1}"#).is_err());
    }

    #[test]
    fn rolls_are_uniform_enough_for_rates() {
        let dice = Dice::seeded(7);
        let rolls: Vec<f64> = (0..10_000).map(|_| dice.roll()).collect();
        assert!(rolls.iter().all(|roll| (0.0..1.0).contains(roll)));
        let below_a_quarter = rolls.iter().filter(|roll| **roll < 0.25).count();
        assert!(
            (2_250..2_750).contains(&below_a_quarter),
            "{below_a_quarter} of 10000 below 0.25"
        );
    }
}
