use std::path::Path;

use platform::config::{ConfigError, HttpSettings, LogSettings};
use serde::{Deserialize, Serialize};

pub const SERVICE: &str = "gateway";
pub const DEFAULT_PORT: u16 = 8080;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub http: HttpSettings,
    pub log: LogSettings,
    pub upstreams: Upstreams,
}

/// Base URLs of the services the gateway forwards to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upstreams {
    pub auth: String,
    pub product: String,
    pub order: String,
    pub inventory: String,
    pub payment: String,
    pub notification: String,
    pub shipping: String,
    /// How long one upstream call may take before the client gets 504.
    pub timeout_ms: u64,
}

impl Upstreams {
    pub fn named(&self) -> [(&'static str, &str); 7] {
        [
            ("auth", &self.auth),
            ("product", &self.product),
            ("order", &self.order),
            ("inventory", &self.inventory),
            ("payment", &self.payment),
            ("notification", &self.notification),
            ("shipping", &self.shipping),
        ]
    }
}

impl Config {
    pub fn defaults() -> Self {
        let local = |port: u16| format!("http://127.0.0.1:{port}");
        Self {
            http: HttpSettings {
                host: "127.0.0.1".into(),
                port: DEFAULT_PORT,
            },
            log: LogSettings::default(),
            upstreams: Upstreams {
                auth: local(8081),
                product: local(8082),
                order: local(8083),
                inventory: local(8084),
                payment: local(8085),
                notification: local(8086),
                shipping: local(8087),
                timeout_ms: 5_000,
            },
        }
    }

    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        platform::config::load(&Self::defaults(), file)
    }
}
