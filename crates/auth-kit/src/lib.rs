//! Bazaar's access tokens, from the verifying side.
//!
//! The auth service signs short-lived JWTs with Ed25519 (`alg: EdDSA`) and publishes the public
//! keys as a JWKS. Everything else (the gateway, every service) verifies them here:
//!
//! - [`AuthSettings`]: where the JWKS is, and which issuer and audience a token must name.
//! - [`JwtVerifier`]: signature, algorithm (pinned to EdDSA), expiry, issuer and audience, with
//!   keys cached by `kid` and refetched (rate-limited) when an unknown `kid` shows up.
//! - [`AuthenticatedUser`] and [`AdminUser`]: actix extractors answering 401 / 403 in the
//!   platform error shape.
//! - [`keys`]: key generation, JWKs and signing, shared by the auth service and the test issuer.
//! - `testing::TestIssuer` (feature `testing`): valid and forged tokens for other crates' tests.

mod extract;
pub mod keys;
mod settings;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod verifier;

pub use extract::{AdminUser, AuthError, AuthenticatedUser, bearer_token};
pub use settings::AuthSettings;
pub use verifier::{Claims, HttpJwks, JwksFuture, JwksSource, JwtVerifier, VerifyError};

/// Role names a token can carry.
pub mod roles {
    pub const CUSTOMER: &str = "customer";
    pub const ADMIN: &str = "admin";
}
