use serde::{Deserialize, Serialize};

/// What a verifier needs to know about the issuer. A service embeds it in its own `Config` as
/// `pub auth: AuthSettings`, so it reads `BAZAAR__AUTH__JWKS_URL`, `BAZAAR__AUTH__ISSUER` and
/// `BAZAAR__AUTH__AUDIENCE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthSettings {
    /// Where the auth service publishes its public keys.
    pub jwks_url: String,
    /// The `iss` every accepted token must carry.
    pub issuer: String,
    /// The `aud` every accepted token must carry.
    pub audience: String,
}

impl AuthSettings {
    pub const DEFAULT_JWKS_URL: &str = "http://127.0.0.1:8081/.well-known/jwks.json";
    pub const DEFAULT_ISSUER: &str = "bazaar-auth";
    pub const DEFAULT_AUDIENCE: &str = "bazaar";
}

impl Default for AuthSettings {
    /// Local development: the auth service on its default port.
    fn default() -> Self {
        Self {
            jwks_url: Self::DEFAULT_JWKS_URL.into(),
            issuer: Self::DEFAULT_ISSUER.into(),
            audience: Self::DEFAULT_AUDIENCE.into(),
        }
    }
}
