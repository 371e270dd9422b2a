//! Ed25519 signing keys: generation, their public JWK, and signing. Only the auth service (and
//! the test issuer) hold private keys; verifiers only ever see [`jwks_json`].

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::verifier::Claims;

/// The one algorithm Bazaar signs and accepts.
pub const ALGORITHM: Algorithm = Algorithm::EdDSA;

/// The fixed PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410); the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the system random source failed: {0}")]
    Random(String),
    #[error("not an Ed25519 PKCS#8 private key")]
    NotEd25519,
    #[error("jwt: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
}

/// An Ed25519 private key with its key id.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    encoding: EncodingKey,
    public: Jwk,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key from the OS random source. Its `kid` is the RFC 7638 thumbprint of the public
    /// key, so the same key always gets the same id.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|error| KeyError::Random(error.to_string()))?;
        let mut pkcs8 = PKCS8_ED25519_PREFIX.to_vec();
        pkcs8.extend_from_slice(&seed);
        let encoding = EncodingKey::from_ed_der(&pkcs8);
        let thumbprint =
            Jwk::from_encoding_key(&encoding, ALGORITHM)?.thumbprint(ThumbprintHash::SHA256)?;
        Self::from_pkcs8(thumbprint, &pkcs8)
    }

    /// A stored key: its id and its PKCS#8 DER bytes (as [`SigningKey::pkcs8_der`] gave them).
    pub fn from_pkcs8(kid: impl Into<String>, der: &[u8]) -> Result<Self, KeyError> {
        if der.len() != PKCS8_ED25519_PREFIX.len() + 32 || !der.starts_with(&PKCS8_ED25519_PREFIX) {
            return Err(KeyError::NotEd25519);
        }
        let kid = kid.into();
        let encoding = EncodingKey::from_ed_der(der);
        let mut public = Jwk::from_encoding_key(&encoding, ALGORITHM)?;
        public.common.key_id = Some(kid.clone());
        public.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(Self {
            kid,
            pkcs8: der.to_vec(),
            encoding,
            public,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key as PKCS#8 DER, for storage.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public half, as published in the JWKS.
    pub fn public_jwk(&self) -> &Jwk {
        &self.public
    }

    /// The raw 32-byte public key.
    pub fn public_key_bytes(&self) -> Vec<u8> {
        match &self.public.algorithm {
            AlgorithmParameters::OctetKeyPair(pair) => {
                URL_SAFE_NO_PAD.decode(&pair.x).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// A compact JWS of `claims`, with this key's `kid` in the header.
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

/// A JWKS document (`{"keys": [...]}`) of the given public keys.
pub fn jwks_json<'a>(keys: impl IntoIterator<Item = &'a Jwk>) -> String {
    let set = JwkSet {
        keys: keys.into_iter().cloned().collect(),
    };
    serde_json::to_string(&set).unwrap_or_else(|_| r#"{"keys":[]}"#.to_owned())
}

/// Whether `jwk` is a key this verifier may use: an Ed25519 public key with a `kid`, meant for
/// signatures, whose `x` really is 32 bytes. Anything else in a JWKS is ignored, so a set that
/// also lists, say, an HMAC key can never make HS256 tokens acceptable.
pub(crate) fn usable_ed25519_key(jwk: &Jwk) -> Option<(String, [u8; 32])> {
    let kid = jwk.common.key_id.clone()?;
    if matches!(&jwk.common.public_key_use, Some(usage) if *usage != PublicKeyUse::Signature) {
        return None;
    }
    if let Some(alg) = jwk.common.key_algorithm
        && alg != KeyAlgorithm::EdDSA
    {
        return None;
    }
    let AlgorithmParameters::OctetKeyPair(pair) = &jwk.algorithm else {
        return None;
    };
    if pair.curve != EllipticCurve::Ed25519 {
        return None;
    }
    let x: [u8; 32] = URL_SAFE_NO_PAD.decode(&pair.x).ok()?.try_into().ok()?;
    Some((kid, x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_round_trips_through_its_pkcs8_bytes() {
        let key = SigningKey::generate().expect("generate");
        let again = SigningKey::from_pkcs8(key.kid(), key.pkcs8_der()).expect("reload");
        assert_eq!(again.public_jwk(), key.public_jwk());
        assert_eq!(key.public_key_bytes().len(), 32);
        assert_eq!(key.kid().len(), 43, "base64url SHA-256 thumbprint");
    }

    #[test]
    fn two_generated_keys_differ() {
        let a = SigningKey::generate().expect("generate");
        let b = SigningKey::generate().expect("generate");
        assert_ne!(a.kid(), b.kid());
        assert_ne!(a.public_key_bytes(), b.public_key_bytes());
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert!(matches!(
            SigningKey::from_pkcs8("k", &[0u8; 48]),
            Err(KeyError::NotEd25519)
        ));
        assert!(matches!(
            SigningKey::from_pkcs8("k", &PKCS8_ED25519_PREFIX),
            Err(KeyError::NotEd25519)
        ));
    }

    #[test]
    fn the_public_jwk_names_its_kid_and_use() {
        let key = SigningKey::generate().expect("generate");
        let json: serde_json::Value =
            serde_json::from_str(&jwks_json([key.public_jwk()])).expect("json");
        let jwk = &json["keys"][0];
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], key.kid());
        assert!(jwk.get("d").is_none(), "no private part: {jwk}");
    }
}
