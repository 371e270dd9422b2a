use std::path::Path;

use auth_kit::AuthSettings;
use platform::config::{ConfigError, ServiceSettings};
use serde::{Deserialize, Serialize};

pub const SERVICE: &str = "auth";
pub const DEFAULT_PORT: u16 = 8081;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub service: ServiceSettings,
    /// The issuer and audience written into tokens (`jwks_url` is where others find the keys).
    pub auth: AuthSettings,
    pub tokens: TokenSettings,
    pub login_limit: LoginLimitSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenSettings {
    /// Lifetime of an access token (a JWT).
    pub access_ttl_secs: u64,
    /// Lifetime of a refresh token; each refresh replaces it with a new one.
    pub refresh_ttl_secs: u64,
}

/// Login throttling, kept in the database so every instance of the service shares it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginLimitSettings {
    /// Failed logins to one account within a window before further attempts get 429.
    pub max_failures_per_account: u32,
    /// Login attempts (failed or not) from one client address within a window.
    pub max_attempts_per_address: u32,
    pub window_secs: u64,
    /// Take the client address from the last `X-Forwarded-For` entry (the one the gateway
    /// appends). Only safe while nothing but the gateway can reach this service.
    pub trust_forwarded_for: bool,
}

impl Config {
    pub fn defaults() -> Self {
        Self {
            service: ServiceSettings::local_defaults(SERVICE, DEFAULT_PORT),
            auth: AuthSettings::default(),
            tokens: TokenSettings {
                access_ttl_secs: 15 * 60,
                refresh_ttl_secs: 30 * 24 * 60 * 60,
            },
            login_limit: LoginLimitSettings {
                max_failures_per_account: 5,
                max_attempts_per_address: 50,
                window_secs: 15 * 60,
                trust_forwarded_for: true,
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
    fn the_defaults_load_and_name_the_shared_issuer() {
        let config = Config::load(None).expect("defaults load");
        assert_eq!(config.auth, AuthSettings::default());
        assert_eq!(config.tokens.access_ttl_secs, 900);
        assert_eq!(config.service.http.port, DEFAULT_PORT);
    }
}
