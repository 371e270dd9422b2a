use std::path::Path;

use auth_kit::AuthSettings;
use platform::config::{ConfigError, ServiceSettings};
use serde::{Deserialize, Serialize};

/// Its consumer group, database and CLI name, as its rules declare it.
pub const SERVICE: &str = product_rules::SERVICE;
pub const DEFAULT_PORT: u16 = 8082;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub service: ServiceSettings,
    pub auth: AuthSettings,
    pub stock: StockSettings,
}

/// How the catalog shows the stock levels it replicates from inventory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StockSettings {
    /// A variant with this many units available or fewer (but some) shows as `low`; 0 never
    /// shows `low`.
    pub low_threshold: u32,
}

impl Config {
    pub fn defaults() -> Self {
        Self {
            service: ServiceSettings::local_defaults(SERVICE, DEFAULT_PORT),
            auth: AuthSettings::default(),
            stock: StockSettings { low_threshold: 5 },
        }
    }

    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        platform::config::load(&Self::defaults(), file)
    }
}
