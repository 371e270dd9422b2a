use std::path::Path;

use platform::config::{ConfigError, HttpSettings, LogSettings};
use serde::{Deserialize, Serialize};

use crate::faults::FaultSettings;

pub const SERVICE: &str = "payment-gateway";
pub const DEFAULT_PORT: u16 = 8089;

/// The simulator needs no database and no Kafka: its state is in memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub http: HttpSettings,
    pub log: LogSettings,
    /// Faults injected from the start; `PUT /_sim/faults` replaces them at runtime.
    pub faults: FaultSettings,
    /// Serve the simulator's own controls under `/_sim` (fault injection, the ledger of every
    /// charge). Off by default: anyone who reaches them can make every payment fail or read
    /// every charge. `make run`, `make test` and the chaos tests switch it on.
    #[serde(default)]
    pub test_mode: bool,
}

impl Config {
    pub fn defaults() -> Self {
        Self {
            http: HttpSettings {
                host: "127.0.0.1".into(),
                port: DEFAULT_PORT,
                keep_alive_ms: HttpSettings::DEFAULT_KEEP_ALIVE_MS,
            },
            log: LogSettings::default(),
            faults: FaultSettings::default(),
            test_mode: false,
        }
    }

    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        platform::config::load(&Self::defaults(), file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::TimeoutMode;

    #[test]
    fn defaults_inject_no_faults() {
        let config = Config::load(None).expect("defaults load");
        assert_eq!(config.http.port, DEFAULT_PORT);
        assert_eq!(config.faults, FaultSettings::default());
        assert!(
            !config.test_mode,
            "the /_sim controls are off unless asked for"
        );
    }

    #[test]
    fn a_file_sets_some_faults_and_keeps_the_other_defaults() {
        let dir = std::env::temp_dir().join(format!("bazaar-pgw-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("payment-gateway.toml");
        std::fs::write(
            &path,
            "[faults]\nfailure_rate = 0.2\nlatency_ms = 150\ntimeout_mode = \"drop\"\n",
        )
        .expect("write");
        let config = Config::load(Some(&path)).expect("file load");
        assert_eq!(config.faults.failure_rate, 0.2);
        assert_eq!(config.faults.latency_ms, 150);
        assert_eq!(config.faults.timeout_mode, TimeoutMode::Drop);
        assert_eq!(config.faults.timeout_hold_ms, 5_000);
        assert_eq!(config.http.port, DEFAULT_PORT);
    }
}
