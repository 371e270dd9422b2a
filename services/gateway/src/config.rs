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

/// The services the gateway forwards to. Each is the base URL of one instance, or of several
/// separated by commas (`"http://10.0.0.1:8083,http://10.0.0.2:8083"`; a TOML file may also
/// give an array of URLs), among which the gateway balances (see [`crate::balance`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upstreams {
    #[serde(deserialize_with = "url_list")]
    pub auth: String,
    #[serde(deserialize_with = "url_list")]
    pub product: String,
    #[serde(deserialize_with = "url_list")]
    pub order: String,
    #[serde(deserialize_with = "url_list")]
    pub inventory: String,
    #[serde(deserialize_with = "url_list")]
    pub payment: String,
    #[serde(deserialize_with = "url_list")]
    pub notification: String,
    #[serde(deserialize_with = "url_list")]
    pub shipping: String,
    /// How long an upstream may take to answer (to send its response headers, and for anything
    /// but an event stream, its whole body) before the client gets 504.
    pub timeout_ms: u64,
    /// How long the gateway keeps an idle connection to an upstream for the next request. It
    /// must be shorter than every upstream's keep-alive (its `http.keep_alive_ms`), so that the
    /// gateway gives a connection up before the upstream closes it: a request written into a
    /// connection the upstream is closing fails before any answer arrives.
    pub pool_idle_timeout_ms: u64,
    /// How often each instance's `/healthz` is checked; one that does not answer 200 (down, or
    /// draining before it stops) is left out of the rotation until it does.
    #[serde(default = "default_health_interval_ms")]
    pub health_interval_ms: u64,
    /// How long an instance that refused a connection is left out of the rotation (unless its
    /// health check passes sooner, or no other instance is left).
    #[serde(default = "default_down_for_ms")]
    pub down_for_ms: u64,
    /// How long the gateway's `/readyz` waits for each upstream's `/readyz` (all are asked at
    /// once). An upstream that does not answer within it counts as not ready. Kept below the
    /// 3 s a readiness check may take in all, so the answer names the upstream that was slow.
    #[serde(default = "default_ready_timeout_ms")]
    pub ready_timeout_ms: u64,
}

fn default_health_interval_ms() -> u64 {
    1_000
}

fn default_ready_timeout_ms() -> u64 {
    2_000
}

fn default_down_for_ms() -> u64 {
    2_000
}

/// One URL, several separated by commas, or (from a TOML file) an array of URLs: kept as the
/// comma-separated text, so that a single URL reads as it always did.
fn url_list<'de, D>(deserializer: D) -> Result<String, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(text) => text,
        OneOrMany::Many(urls) => urls.join(","),
    })
}

/// The base URLs in a comma-separated list, without blanks or trailing slashes.
pub fn instances(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(|url| url.trim().trim_end_matches('/'))
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect()
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
                health_interval_ms: default_health_interval_ms(),
                down_for_ms: default_down_for_ms(),
                ready_timeout_ms: default_ready_timeout_ms(),
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
    fn a_service_gives_up_waiting_for_a_connection_before_the_gateway_gives_up_on_it() {
        // Else the client hears 504 about a checkout the service may still place, instead of
        // the service's own 503 with nothing written.
        assert!(
            platform::config::DatabaseSettings::DEFAULT_ACQUIRE_TIMEOUT_MS
                < Config::defaults().upstreams.timeout_ms
        );
    }

    #[test]
    fn an_upstream_is_one_url_or_several() {
        assert_eq!(
            instances("http://127.0.0.1:8083"),
            ["http://127.0.0.1:8083"]
        );
        assert_eq!(
            instances(" http://a:8083/ , http://b:8083,, "),
            ["http://a:8083", "http://b:8083"]
        );
        assert!(instances(" , ").is_empty());
    }

    #[test]
    fn a_file_may_list_instances_as_an_array_or_a_string() {
        let dir = std::env::temp_dir().join(format!("gateway-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("gateway.toml");
        std::fs::write(
            &file,
            "[upstreams]\norder = [\"http://a:8083\", \"http://b:8083\"]\nauth = \"http://a:8081,http://b:8081\"\n",
        )
        .expect("write");
        let config = Config::load(Some(&file)).expect("loads");
        assert_eq!(
            instances(&config.upstreams.order),
            ["http://a:8083", "http://b:8083"]
        );
        assert_eq!(
            instances(&config.upstreams.auth),
            ["http://a:8081", "http://b:8081"]
        );
        assert_eq!(
            instances(&config.upstreams.product),
            ["http://127.0.0.1:8082"]
        );
        assert_eq!(config.upstreams.health_interval_ms, 1_000);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn by_default_the_gateway_drops_idle_upstream_connections_before_the_services_do() {
        let upstreams = Config::defaults().upstreams;
        assert!(upstreams.pool_idle_timeout_ms < HttpSettings::DEFAULT_KEEP_ALIVE_MS);
    }
}
