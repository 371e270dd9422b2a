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
}

impl Config {
    pub fn defaults() -> Self {
        Self {
            http: HttpSettings {
                host: "127.0.0.1".into(),
                port: DEFAULT_PORT,
            },
            log: LogSettings::default(),
            faults: FaultSettings::default(),
        }
    }

    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        platform::config::load(&Self::defaults(), file)
    }
}
