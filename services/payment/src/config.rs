use std::path::Path;

use platform::config::{ConfigError, ServiceSettings};
use serde::{Deserialize, Serialize};

use crate::provider::ProviderSettings;

pub const SERVICE: &str = "payment";
pub const DEFAULT_PORT: u16 = 8085;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub service: ServiceSettings,
    pub provider: ProviderSettings,
    pub workers: WorkerSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSettings {
    /// Charges or refunds sent to the provider at once.
    pub concurrency: i64,
    /// How long a claimed charge is reserved for one worker before another may retry it.
    pub lease_ms: u64,
    /// Fallback poll interval when no notification arrives.
    pub poll_ms: u64,
    /// Retry delay after an unknown outcome grows from this...
    pub retry_initial_ms: u64,
    /// ...up to this.
    pub retry_max_ms: u64,
}

impl Config {
    pub fn defaults() -> Self {
        Self {
            service: ServiceSettings::local_defaults(SERVICE, DEFAULT_PORT),
            provider: ProviderSettings::default(),
            workers: WorkerSettings {
                concurrency: 32,
                lease_ms: 30_000,
                poll_ms: 500,
                retry_initial_ms: 200,
                retry_max_ms: 10_000,
            },
        }
    }

    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        platform::config::load(&Self::defaults(), file)
    }
}
