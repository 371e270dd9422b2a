use std::path::Path;
use std::time::Duration;

use auth_kit::AuthSettings;
use platform::config::{ConfigError, HttpSettings, LogSettings};
use serde::{Deserialize, Serialize};

pub const SERVICE: &str = "gateway";
pub const DEFAULT_PORT: u16 = 8080;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub http: HttpSettings,
    pub log: LogSettings,
    pub upstreams: Upstreams,
    /// Where the JWKS is and which issuer and audience tokens must name.
    pub auth: AuthSettings,
    pub limits: Limits,
    pub cors: CorsSettings,
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
    /// How long an upstream may take to answer (to send its response headers, and for anything
    /// but an event stream, its whole body) before the client gets 504.
    pub timeout_ms: u64,
    /// How long the gateway keeps an idle connection to an upstream for the next request. It
    /// must be shorter than every upstream's keep-alive (its `http.keep_alive_ms`), so that the
    /// gateway gives a connection up before the upstream closes it: a request written into a
    /// connection the upstream is closing fails before any answer arrives.
    pub pool_idle_timeout_ms: u64,
}

impl Upstreams {
    pub fn pool_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.pool_idle_timeout_ms)
    }

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limits {
    /// Largest request body forwarded; larger ones get 413.
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorsSettings {
    /// Comma-separated origins allowed to call the API from a browser, e.g.
    /// `https://shop.example.com,http://localhost:5173`; `*` allows any origin. Empty (the
    /// default) allows none: the storefront is served by the gateway itself, same-origin.
    pub allowed_origins: String,
}

impl CorsSettings {
    pub fn origins(&self) -> Vec<&str> {
        self.allowed_origins
            .split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .collect()
    }
}

impl Config {
    pub fn defaults() -> Self {
        let local = |port: u16| format!("http://127.0.0.1:{port}");
        Self {
            http: HttpSettings {
                host: "127.0.0.1".into(),
                port: DEFAULT_PORT,
                keep_alive_ms: HttpSettings::DEFAULT_KEEP_ALIVE_MS,
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
                // A third below the services' default keep-alive (15 s): the gateway's idle
                // clock starts when it has read an answer, a little after the service's.
                pool_idle_timeout_ms: 10_000,
            },
            auth: AuthSettings::default(),
            limits: Limits {
                max_body_bytes: 1024 * 1024,
            },
            cors: CorsSettings {
                allowed_origins: String::new(),
            },
        }
    }

    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        platform::config::load(&Self::defaults(), file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_are_a_comma_separated_list() {
        let cors = CorsSettings {
            allowed_origins: " https://a.example, ,http://localhost:5173 ".into(),
        };
        assert_eq!(
            cors.origins(),
            ["https://a.example", "http://localhost:5173"]
        );
        assert!(Config::defaults().cors.origins().is_empty());
    }

    #[test]
    fn by_default_the_gateway_drops_idle_upstream_connections_before_the_services_do() {
        let upstreams = Config::defaults().upstreams;
        assert!(upstreams.pool_idle_timeout_ms < HttpSettings::DEFAULT_KEEP_ALIVE_MS);
    }
}
