//! Layered configuration: built-in defaults, then an optional TOML file, then environment
//! variables (`BAZAAR__SECTION__KEY`), the last one winning.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};

/// Environment variable naming an optional configuration file.
pub const CONFIG_FILE_ENV: &str = "BAZAAR_CONFIG_FILE";
/// Prefix of every configuration environment variable; nesting uses `__`.
pub const ENV_PREFIX: &str = "BAZAAR";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} does not exist")]
    MissingFile { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
}

/// Loads `T` from `defaults`, then `file` (or the file named by `BAZAAR_CONFIG_FILE`), then the
/// environment.
pub fn load<T>(defaults: &T, file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned,
{
    let from_env = std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from);
    let file = file.map(Path::to_path_buf).or(from_env);
    let mut builder = config::Config::builder().add_source(config::Config::try_from(defaults)?);
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::MissingFile { path });
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true),
    );
    Ok(builder.build()?.try_deserialize()?)
}

/// Settings every service has. A service embeds this with `#[serde(flatten)]` next to its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceSettings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub kafka: KafkaSettings,
    pub log: LogSettings,
}

impl ServiceSettings {
    /// Local-development defaults for the service `name`, matching what `make run` provisions.
    pub fn local_defaults(name: &str, port: u16) -> Self {
        let role = format!("bazaar_{name}");
        Self {
            http: HttpSettings {
                host: "127.0.0.1".into(),
                port,
                keep_alive_ms: HttpSettings::DEFAULT_KEEP_ALIVE_MS,
            },
            database: DatabaseSettings {
                url: format!("postgres://{role}:{role}@127.0.0.1:5432/{role}").into(),
                max_connections: 10,
                acquire_timeout_ms: DatabaseSettings::DEFAULT_ACQUIRE_TIMEOUT_MS,
                plan_cache_mode: PlanCacheMode::default(),
            },
            kafka: KafkaSettings::local_defaults(name),
            log: LogSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpSettings {
    pub host: String,
    /// 0 asks the OS for a free port (tests do this).
    pub port: u16,
    /// How long the server keeps a connection open while it waits for the client's next request
    /// (HTTP keep-alive); 0 closes it after every answer. A client that pools connections to
    /// this server must give an idle one up sooner (the gateway's
    /// `upstreams.pool_idle_timeout_ms`): a request written into a connection as the server
    /// closes it fails before any answer arrives.
    pub keep_alive_ms: u64,
}

impl HttpSettings {
    /// Longer than actix-web's own 5 s, so that clients can keep connections between requests a
    /// few seconds apart, and above the 10 s for which Bazaar's clients keep idle connections.
    pub const DEFAULT_KEEP_ALIVE_MS: u64 = 15_000;

    pub fn keep_alive(&self) -> Duration {
        Duration::from_millis(self.keep_alive_ms)
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseSettings {
    #[serde(serialize_with = "serialize_secret")]
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    /// PostgreSQL's `plan_cache_mode` on every connection the service opens (see
    /// [`PlanCacheMode`]).
    #[serde(default)]
    pub plan_cache_mode: PlanCacheMode,
}

/// How PostgreSQL plans the services' prepared statements (its `plan_cache_mode`), set on each
/// connection.
///
/// PostgreSQL's `auto` plans a prepared statement anew at each execution for as long as the plan
/// it would make for those very parameters looks cheaper than the generic one. For the batch
/// statements (`unnest($1::uuid[])`, `= ANY($1)`) it always does: it guesses 100 rows for the
/// generic array and sees the one or two of the actual batch. At 25 checkouts/s, 9 of the
/// consumers' statements were planned at every call, about 100 µs of PostgreSQL's CPU each and
/// more than running them (pg_stat_statements with `track_planning`): about 0.9 ms per order.
/// Bazaar's statements are lookups by key on indexed columns, whose plan does not depend on
/// the values, so by default each is planned once per connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanCacheMode {
    /// Planned once per connection and reused (PostgreSQL's `force_generic_plan`).
    #[default]
    ForceGenericPlan,
    /// PostgreSQL's own choice, statement by statement (its default).
    Auto,
    /// Planned anew at every execution, for the values given.
    ForceCustomPlan,
}

impl PlanCacheMode {
    /// The value PostgreSQL's `plan_cache_mode` takes.
    pub fn as_setting(self) -> &'static str {
        match self {
            Self::ForceGenericPlan => "force_generic_plan",
            Self::Auto => "auto",
            Self::ForceCustomPlan => "force_custom_plan",
        }
    }
}

impl DatabaseSettings {
    /// Below the gateway's upstream timeout (5 s): an overloaded service answers 503 itself,
    /// with nothing written, before the gateway gives up with a 504 on a request that might
    /// still go through after the client was told it failed.
    pub const DEFAULT_ACQUIRE_TIMEOUT_MS: u64 = 3_000;

    pub fn url(&self) -> &str {
        self.url.expose_secret()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    /// Prepended to every topic name; tests use it to isolate themselves on a shared broker.
    pub topic_prefix: String,
    /// The consumer group id of this service.
    pub group_id: String,
    /// Replication factor for topics this process creates; production runs 3.
    pub replication_factor: i32,
    /// Base URL of the Confluent-compatible schema registry.
    pub schema_registry_url: String,
    /// `user:password` sent to the registry as HTTP basic auth with every call, as Confluent's
    /// clients send `basic.auth.user.info`: registering a schema needs it, reading does not
    /// (Bazaar's registry; Confluent's asks for it on reads too). Empty: none sent.
    #[serde(
        default = "local_schema_registry_user_info",
        serialize_with = "serialize_secret"
    )]
    pub schema_registry_user_info: SecretString,
    /// The Kafka principal this process authenticates as (SASL/SCRAM-SHA-512); the brokers'
    /// ACLs decide what it may read and write. Empty: no authentication (a broker that allows
    /// anonymous clients).
    #[serde(default)]
    pub sasl_username: String,
    /// The principal's SCRAM password; kept redacted in `Debug` output and never logged.
    #[serde(default, serialize_with = "serialize_secret")]
    pub sasl_password: SecretString,
    /// `sasl_plaintext` (loopback, a private network), `sasl_ssl` across hosts (the brokers'
    /// certificates checked against the system's CAs), or `plaintext`: no authentication, for a
    /// broker that lets anonymous clients in.
    #[serde(default = "default_security_protocol")]
    pub security_protocol: String,
}

fn default_security_protocol() -> String {
    "sasl_plaintext".into()
}

/// The SCRAM password of a principal in local runs and tests (`make run`, `make test`):
/// `infra/kafka/kafkactl.sh` creates every principal with it (from `infra/kafka/access.txt`,
/// which `bazaar access --local` writes). Every deployment sets its own.
pub fn local_kafka_password(principal: &str) -> SecretString {
    format!("bazaar-local-{principal}").into()
}

/// The registry credentials of local runs and tests (`make run`, `make test`): the registry's
/// default writer, so a machine needs no setup. Every deployment sets its own; the registry
/// warns at start while it accepts this one.
pub const LOCAL_SCHEMA_REGISTRY_USER_INFO: &str = "bazaar:local-registry-writer";

pub fn local_schema_registry_user_info() -> SecretString {
    LOCAL_SCHEMA_REGISTRY_USER_INFO.into()
}

impl KafkaSettings {
    pub fn local_defaults(name: &str) -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topic_prefix: String::new(),
            group_id: format!("bazaar-{name}"),
            replication_factor: 1,
            schema_registry_url: "http://127.0.0.1:8088".into(),
            schema_registry_user_info: local_schema_registry_user_info(),
            sasl_username: name.to_owned(),
            sasl_password: local_kafka_password(name),
            security_protocol: default_security_protocol(),
        }
    }

    /// Whether clients authenticate (SASL) as `sasl_username`.
    pub fn authenticates(&self) -> bool {
        !self.sasl_username.is_empty() && !self.security_protocol.eq_ignore_ascii_case("plaintext")
    }

    /// The same settings as another principal, e.g. a test's own.
    pub fn as_principal(&self, principal: &str, password: SecretString) -> Self {
        Self {
            sasl_username: principal.to_owned(),
            sasl_password: password,
            ..self.clone()
        }
    }

    pub fn topic(&self, name: &str) -> String {
        format!("{}{}", self.topic_prefix, name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogSettings {
    /// An `EnvFilter` directive such as `info` or `info,sqlx=warn`; `RUST_LOG` overrides it.
    pub filter: String,
    pub format: LogFormat,
    /// An OTLP/HTTP collector's base URL (e.g. `http://127.0.0.1:4318`) to export spans to;
    /// empty: no spans exported (`BAZAAR__LOG__OTLP_ENDPOINT`).
    #[serde(default)]
    pub otlp_endpoint: String,
    /// The share of new traces sampled, 0 to 1; a trace continued from a caller follows the
    /// caller's decision (`BAZAAR__LOG__TRACE_SAMPLE_RATIO`).
    #[serde(default = "full_sampling")]
    pub trace_sample_ratio: f64,
}

fn full_sampling() -> f64 {
    1.0
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            filter: "info,sqlx=warn,rdkafka=warn,apache_avro=error".into(),
            format: LogFormat::Json,
            otlp_endpoint: String::new(),
            trace_sample_ratio: full_sampling(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Defaults are serialized into the first configuration layer, so the secret has to be written
/// out there; `Debug` still redacts it.
pub fn serialize_secret<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Sample {
        #[serde(flatten)]
        service: ServiceSettings,
        greeting: String,
    }

    fn defaults() -> Sample {
        Sample {
            service: ServiceSettings::local_defaults("sample", 9000),
            greeting: "hello".into(),
        }
    }

    #[test]
    fn defaults_survive_a_load_without_file_or_environment() {
        let loaded = load(&defaults(), None).expect("defaults load");
        assert_eq!(loaded.service.http.port, 9000);
        assert_eq!(loaded.greeting, "hello");
        assert_eq!(
            loaded.service.database.url(),
            "postgres://bazaar_sample:bazaar_sample@127.0.0.1:5432/bazaar_sample"
        );
        assert_eq!(loaded.service.kafka.group_id, "bazaar-sample");
        assert_eq!(loaded.service.http.keep_alive(), Duration::from_secs(15));
    }

    #[test]
    fn a_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("bazaar-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("sample.toml");
        std::fs::write(&path, "greeting = \"hi\"\n[http]\nport = 9100\n").expect("write");
        let loaded = load(&defaults(), Some(&path)).expect("file load");
        assert_eq!(loaded.service.http.port, 9100);
        assert_eq!(loaded.service.http.host, "127.0.0.1");
        assert_eq!(loaded.greeting, "hi");
    }

    #[test]
    fn a_missing_file_is_a_clear_error() {
        let err = load(&defaults(), Some(Path::new("/nonexistent/bazaar.toml")))
            .expect_err("missing file must fail");
        assert!(
            err.to_string().contains("/nonexistent/bazaar.toml"),
            "{err}"
        );
    }

    #[test]
    fn debug_output_redacts_the_database_url_and_the_registry_credentials() {
        let printed = format!("{:?}", defaults());
        assert!(
            !printed.contains("bazaar_sample:bazaar_sample@"),
            "{printed}"
        );
        assert!(
            !printed.contains(LOCAL_SCHEMA_REGISTRY_USER_INFO),
            "{printed}"
        );
        let password = local_kafka_password("sample");
        assert!(!printed.contains(password.expose_secret()), "{printed}");
        assert!(printed.contains("sasl_username: \"sample\""), "{printed}");
    }
}
