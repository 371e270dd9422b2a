use std::path::Path;

use platform::config::{
    ConfigError, LOCAL_SCHEMA_REGISTRY_USER_INFO, ServiceSettings, serialize_secret,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

pub const SERVICE: &str = "registry";
/// Confluent's documented default port, so clients' usual `schema.registry.url` works unchanged.
pub const DEFAULT_PORT: u16 = 8088;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub service: ServiceSettings,
    #[serde(default)]
    pub auth: AuthSettings,
}

/// Who may change the registry. Reads (schemas by id, subjects, versions, lookups, compatibility
/// checks) are open to anyone who can reach it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthSettings {
    /// The `user:password` pairs allowed to register schemas, delete subjects and versions and
    /// change compatibility settings, with HTTP basic auth (what Confluent's clients send as
    /// `basic.auth.user.info`), separated by commas: two while a password is being rotated.
    /// Empty: nobody may write.
    #[serde(serialize_with = "serialize_secret")]
    pub writers: SecretString,
}

impl Default for AuthSettings {
    /// The writer that local runs and tests use (the clients' default credentials).
    fn default() -> Self {
        Self {
            writers: LOCAL_SCHEMA_REGISTRY_USER_INFO.into(),
        }
    }
}

impl AuthSettings {
    /// Whether anyone can write with the credentials that every checkout knows.
    pub fn admits_the_local_default(&self) -> bool {
        self.writers
            .expose_secret()
            .split(',')
            .any(|pair| pair.trim() == LOCAL_SCHEMA_REGISTRY_USER_INFO)
    }
}

impl Config {
    pub fn defaults() -> Self {
        Self {
            service: ServiceSettings::local_defaults(SERVICE, DEFAULT_PORT),
            auth: AuthSettings::default(),
        }
    }

    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        platform::config::load(&Self::defaults(), file)
    }
}
