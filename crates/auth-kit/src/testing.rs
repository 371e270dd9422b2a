//! A stand-in for the auth service in tests: a fresh key pair, its JWKS, valid tokens, and every
//! kind of forged token a verifier must refuse.
//!
//! ```ignore
//! let issuer = TestIssuer::new();
//! let config = my_service::config::Config { auth: issuer.settings().clone(), .. };
//! // serve issuer.jwks_json() at config.auth.jwks_url, or register issuer.verifier() directly
//! let token = issuer.token_for(user_id, "ada@example.com", &["customer"]);
//! ```

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use uuid::Uuid;

use crate::keys::{SigningKey, jwks_json};
use crate::settings::AuthSettings;
use crate::verifier::{Claims, JwtVerifier, unix_now};

/// How long tokens from [`TestIssuer::token_for`] live.
pub const TEST_TOKEN_TTL: Duration = Duration::from_secs(900);

/// Mints tokens like the auth service does, with a key of its own.
#[derive(Debug, Clone)]
pub struct TestIssuer {
    settings: AuthSettings,
    key: SigningKey,
    impostor: SigningKey,
}

impl Default for TestIssuer {
    fn default() -> Self {
        Self::new()
    }
}

impl TestIssuer {
    /// A fresh key, with the default issuer and audience.
    pub fn new() -> Self {
        Self::with_settings(AuthSettings::default())
    }

    /// A fresh key; tokens name `settings`' issuer and audience.
    pub fn with_settings(settings: AuthSettings) -> Self {
        Self::from_signing_key(settings, generate())
    }

    /// An existing key, e.g. one read from the auth service's database, so tests can mint
    /// tokens (expired ones, say) that the real service would have signed.
    pub fn from_signing_key(settings: AuthSettings, key: SigningKey) -> Self {
        Self {
            settings,
            key,
            impostor: generate(),
        }
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// `{"keys": [<this issuer's public key>]}`
    pub fn jwks_json(&self) -> String {
        jwks_json([self.key.public_jwk()])
    }

    /// A JWKS listing this issuer's key and `other`'s, as during a key rotation.
    pub fn jwks_with(&self, other: &TestIssuer) -> String {
        jwks_json([self.key.public_jwk(), other.key.public_jwk()])
    }

    /// A verifier that trusts exactly this issuer's key.
    pub fn verifier(&self) -> JwtVerifier {
        JwtVerifier::from_jwks(self.settings.clone(), &self.jwks_json())
            .unwrap_or_else(|error| panic!("own JWKS must parse: {error}"))
    }

    /// Valid claims for the user, to adjust before [`TestIssuer::sign`].
    pub fn claims_for(&self, user_id: Uuid, email: &str, roles: &[&str]) -> Claims {
        Claims::new(
            &self.settings,
            user_id,
            email,
            roles.iter().map(|role| (*role).to_owned()).collect(),
            TEST_TOKEN_TTL,
        )
    }

    /// Signs any claims with this issuer's key.
    pub fn sign(&self, claims: &Claims) -> String {
        self.key
            .sign(claims)
            .unwrap_or_else(|error| panic!("signing a test token: {error}"))
    }

    /// A valid access token.
    pub fn token_for(&self, user_id: Uuid, email: &str, roles: &[&str]) -> String {
        self.sign(&self.claims_for(user_id, email, roles))
    }

    /// Correctly signed, but expired an hour ago.
    pub fn expired_token_for(&self, user_id: Uuid, email: &str, roles: &[&str]) -> String {
        let mut claims = self.claims_for(user_id, email, roles);
        claims.iat = unix_now() - 7200;
        claims.exp = unix_now() - 3600;
        self.sign(&claims)
    }

    /// Signed by another key that claims this issuer's `kid`.
    pub fn other_key_token_for(&self, user_id: Uuid, email: &str, roles: &[&str]) -> String {
        let impostor = SigningKey::from_pkcs8(self.kid(), self.impostor.pkcs8_der())
            .unwrap_or_else(|error| panic!("impostor key: {error}"));
        impostor
            .sign(&self.claims_for(user_id, email, roles))
            .unwrap_or_else(|error| panic!("signing: {error}"))
    }

    /// Signed by another key under a `kid` nobody published.
    pub fn unknown_kid_token_for(&self, user_id: Uuid, email: &str, roles: &[&str]) -> String {
        let stranger =
            SigningKey::from_pkcs8(Uuid::new_v4().to_string(), self.impostor.pkcs8_der())
                .unwrap_or_else(|error| panic!("stranger key: {error}"));
        stranger
            .sign(&self.claims_for(user_id, email, roles))
            .unwrap_or_else(|error| panic!("signing: {error}"))
    }

    /// A validly signed customer token whose payload was then rewritten to grant `roles`
    /// (and the admin role), keeping the original signature.
    pub fn tampered_token_for(&self, user_id: Uuid, email: &str, roles: &[&str]) -> String {
        let genuine = self.token_for(user_id, email, &["customer"]);
        let mut parts: Vec<&str> = genuine.split('.').collect();
        let mut claims = self.claims_for(user_id, email, roles);
        claims.roles.push("admin".into());
        let forged_payload = encode_part(&claims);
        parts[1] = &forged_payload;
        parts.join(".")
    }

    /// `alg: none` with an empty signature.
    pub fn alg_none_token_for(&self, user_id: Uuid, email: &str, roles: &[&str]) -> String {
        let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": self.kid()});
        format!(
            "{}.{}.",
            encode_part(&header),
            encode_part(&self.claims_for(user_id, email, roles))
        )
    }

    /// HS256 keyed with the raw public key: the classic algorithm-confusion forgery.
    pub fn hs256_with_public_key_token_for(
        &self,
        user_id: Uuid,
        email: &str,
        roles: &[&str],
    ) -> String {
        self.hmac_signed(&self.key.public_key_bytes(), user_id, email, roles)
    }

    fn hmac_signed(&self, secret: &[u8], user_id: Uuid, email: &str, roles: &[&str]) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid().to_owned());
        jsonwebtoken::encode(
            &header,
            &self.claims_for(user_id, email, roles),
            &EncodingKey::from_secret(secret),
        )
        .unwrap_or_else(|error| panic!("HMAC signing: {error}"))
    }

    /// Every forgery a verifier must refuse, named, for loops in tests: expired, tampered,
    /// signed by another key, unknown kid, `alg: none`, HS256 keyed with the public key (raw,
    /// as its base64url `x`, and as the JWKS text), wrong issuer, wrong audience, and garbage.
    pub fn forged_tokens_for(
        &self,
        user_id: Uuid,
        email: &str,
        roles: &[&str],
    ) -> Vec<(&'static str, String)> {
        let x = URL_SAFE_NO_PAD.encode(self.key.public_key_bytes());
        let mut wrong_issuer = self.claims_for(user_id, email, roles);
        wrong_issuer.iss = "not-bazaar".into();
        let mut wrong_audience = self.claims_for(user_id, email, roles);
        wrong_audience.aud = "not-bazaar".into();
        vec![
            ("expired", self.expired_token_for(user_id, email, roles)),
            ("tampered", self.tampered_token_for(user_id, email, roles)),
            ("other key", self.other_key_token_for(user_id, email, roles)),
            (
                "unknown kid",
                self.unknown_kid_token_for(user_id, email, roles),
            ),
            ("alg none", self.alg_none_token_for(user_id, email, roles)),
            (
                "HS256 with the public key",
                self.hs256_with_public_key_token_for(user_id, email, roles),
            ),
            (
                "HS256 with the public key's x",
                self.hmac_signed(x.as_bytes(), user_id, email, roles),
            ),
            (
                "HS256 with the JWKS",
                self.hmac_signed(self.jwks_json().as_bytes(), user_id, email, roles),
            ),
            ("wrong issuer", self.sign(&wrong_issuer)),
            ("wrong audience", self.sign(&wrong_audience)),
            ("garbage", "definitely.not.a-token".to_owned()),
        ]
    }
}

fn generate() -> SigningKey {
    SigningKey::generate().unwrap_or_else(|error| panic!("generating a test key: {error}"))
}

fn encode_part(value: &impl serde::Serialize) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}
