use std::path::Path;

use auth_kit::AuthSettings;
use platform::config::{ConfigError, ServiceSettings};
use serde::{Deserialize, Serialize};

pub const SERVICE: &str = "order";
pub const DEFAULT_PORT: u16 = 8083;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub service: ServiceSettings,
    pub auth: AuthSettings,
    pub checkout: CheckoutSettings,
    pub streams: StreamSettings,
}

/// Order event streams (`GET /orders/{id}/events`), each holding a connection open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamSettings {
    /// Streams one user may have open at once on one instance; one more closes their oldest.
    pub max_per_user: u32,
    /// A stream that has sent no status change for this long is closed (keep-alive comments
    /// do not count); a client that still cares reconnects with `Last-Event-ID`.
    pub idle_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckoutSettings {
    /// An order still pending this long after checkout is cancelled with reason `timeout`.
    pub deadline_ms: u64,
    /// How often the deadline worker looks for such orders.
    pub deadline_interval_ms: u64,
}

impl Config {
    pub fn defaults() -> Self {
        Self {
            service: ServiceSettings::local_defaults(SERVICE, DEFAULT_PORT),
            auth: AuthSettings::default(),
            checkout: CheckoutSettings {
                deadline_ms: 15 * 60 * 1000,
                deadline_interval_ms: 1000,
            },
            streams: StreamSettings {
                max_per_user: 10,
                idle_timeout_ms: 10 * 60 * 1000,
            },
        }
    }

    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        platform::config::load(&Self::defaults(), file)
    }
}
