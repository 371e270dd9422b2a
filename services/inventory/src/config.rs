use std::path::Path;

use auth_kit::AuthSettings;
use platform::config::{ConfigError, ServiceSettings};
use serde::{Deserialize, Serialize};

pub const SERVICE: &str = "inventory";
pub const DEFAULT_PORT: u16 = 8084;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub service: ServiceSettings,
    pub auth: AuthSettings,
    pub reservations: ReservationSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReservationSettings {
    /// How long stock stays reserved for an unpaid order before it is released.
    pub ttl_ms: u64,
    /// How often the expiry worker looks for reservations past their time.
    pub expiry_interval_ms: u64,
}

impl Config {
    pub fn defaults() -> Self {
        Self {
            service: ServiceSettings::local_defaults(SERVICE, DEFAULT_PORT),
            auth: AuthSettings::default(),
            reservations: ReservationSettings {
                ttl_ms: 15 * 60 * 1000,
                expiry_interval_ms: 1000,
            },
        }
    }

    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        platform::config::load(&Self::defaults(), file)
    }
}
