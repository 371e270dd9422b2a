use std::path::Path;

use platform::config::{ConfigError, ServiceSettings};
use serde::{Deserialize, Serialize};

pub const SERVICE: &str = "registry";
/// Confluent's documented default port, so clients' usual `schema.registry.url` works unchanged.
pub const DEFAULT_PORT: u16 = 8088;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub service: ServiceSettings,
}

impl Config {
    pub fn defaults() -> Self {
        Self {
            service: ServiceSettings::local_defaults(SERVICE, DEFAULT_PORT),
        }
    }

    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        platform::config::load(&Self::defaults(), file)
    }
}
