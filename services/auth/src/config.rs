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
    pub register_limit: RegisterLimitSettings,
    pub client_address: ClientAddressSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenSettings {
    /// Lifetime of an access token (a JWT).
    pub access_ttl_secs: u64,
    /// Lifetime of a refresh token; each refresh replaces it with a new one.
    pub refresh_ttl_secs: u64,
    /// Lifetime of a session (a family of refresh tokens) from its login, however often it is
    /// refreshed: no refresh token outlives it.
    pub refresh_absolute_ttl_secs: u64,
}

/// Login throttling, kept in the database so every instance of the service shares it. Only
/// wrong passwords count, per account and address and per address: a stranger's guesses use up
/// their own allowance, never the owner's (see docs/security.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginLimitSettings {
    /// Wrong passwords for one account from one client address within a window; beyond it,
    /// that address gets 429 for that account (other addresses are not affected).
    pub max_failures_per_account_address: u32,
    /// Wrong passwords from one client address within a window, whatever the accounts; beyond
    /// it, every login from that address gets 429.
    pub max_failures_per_address: u32,
    pub window_secs: u64,
}

/// Self-registration throttling per client address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterLimitSettings {
    /// Registrations (valid requests, whether the address was free or not) from one client
    /// address within a window; beyond it, 429.
    pub max_per_address: u32,
    pub window_secs: u64,
}

/// Where the client address used for throttling comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientAddressSettings {
    /// Comma-separated addresses or CIDR ranges of the proxies (the gateway) whose
    /// `X-Forwarded-For` entries are believed. Empty (the default): the TCP peer is the client.
    pub trusted_proxies: String,
}

impl Config {
    pub fn defaults() -> Self {
        Self {
            service: ServiceSettings::local_defaults(SERVICE, DEFAULT_PORT),
            auth: AuthSettings::default(),
            tokens: TokenSettings {
                access_ttl_secs: 15 * 60,
                refresh_ttl_secs: 30 * 24 * 60 * 60,
                refresh_absolute_ttl_secs: 90 * 24 * 60 * 60,
            },
            login_limit: LoginLimitSettings {
                max_failures_per_account_address: 5,
                max_failures_per_address: 50,
                window_secs: 15 * 60,
            },
            register_limit: RegisterLimitSettings {
                max_per_address: 20,
                window_secs: 10 * 60,
            },
            client_address: ClientAddressSettings {
                trusted_proxies: String::new(),
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
        assert!(
            config.client_address.trusted_proxies.is_empty(),
            "no forwarded address is believed unless configured"
        );
    }
}
