//! Access-token verification against the issuer's published keys.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use platform::http::client::error_chain;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::keys::{ALGORITHM, usable_ed25519_key};
use crate::settings::AuthSettings;

/// Seconds of clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 30;
/// An unknown `kid` triggers a refetch at most this often, so forged tokens with random key ids
/// cannot turn every request into a JWKS download.
const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(1);
/// An unknown `kid` waits for the next allowed refetch only if it comes within this long.
const MAX_WAIT_FOR_REFETCH: Duration = Duration::from_secs(2);
/// Keys are reloaded this long after the last successful fetch even when every `kid` is known,
/// so a key the issuer withdrew stops being accepted.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// The claims of a Bazaar access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id (a UUID).
    pub sub: String,
    pub email: String,
    pub roles: Vec<String>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
}

impl Claims {
    /// Claims for `user_id` valid from now for `ttl`, naming `settings`' issuer and audience.
    pub fn new(
        settings: &AuthSettings,
        user_id: Uuid,
        email: &str,
        roles: Vec<String>,
        ttl: Duration,
    ) -> Self {
        let now = unix_now();
        Self {
            iss: settings.issuer.clone(),
            aud: settings.audience.clone(),
            sub: user_id.to_string(),
            email: email.to_owned(),
            roles,
            iat: now,
            exp: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            jti: Uuid::new_v4().to_string(),
        }
    }

    pub fn user_id(&self) -> Result<Uuid, VerifyError> {
        Uuid::parse_str(&self.sub).map_err(|_| VerifyError::InvalidClaims("sub"))
    }
}

pub(crate) fn unix_now() -> i64 {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// Why a token was refused. Every variant means 401 to a client except
/// [`VerifyError::KeysUnavailable`], which is the verifier's problem, not the token's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("algorithm {0} is not accepted")]
    DisallowedAlgorithm(String),
    #[error("the token names no key id or an unknown one")]
    UnknownKey,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("claim {0} is missing or wrong")]
    InvalidClaims(&'static str),
    #[error("the issuer's public keys cannot be fetched: {0}")]
    KeysUnavailable(String),
}

/// A boxed future returned by [`JwksSource::fetch`].
pub type JwksFuture<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// Where a verifier gets the JWKS document from.
pub trait JwksSource: Send + Sync + fmt::Debug + 'static {
    /// The current JWKS JSON, or why it cannot be had.
    fn fetch(&self) -> JwksFuture<'_>;
}

/// Fetches the JWKS over HTTP.
#[derive(Debug, Clone)]
pub struct HttpJwks {
    url: String,
    client: reqwest::Client,
}

impl HttpJwks {
    pub fn new(url: impl Into<String>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            // Keys are fetched seldom (every few minutes, or for an unknown key id), mostly
            // after the issuer has closed any connection kept from the last fetch (its
            // `http.keep_alive_ms`), or while it is closing it. Each fetch opens its own.
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_default();
        Self {
            url: url.into(),
            client,
        }
    }
}

impl JwksSource for HttpJwks {
    fn fetch(&self) -> JwksFuture<'_> {
        Box::pin(async move {
            let answer = self
                .client
                .get(&self.url)
                .send()
                .await
                .map_err(|error| format!("GET {}: {}", self.url, error_chain(&error)))?;
            if !answer.status().is_success() {
                return Err(format!("GET {} answered {}", self.url, answer.status()));
            }
            answer
                .text()
                .await
                .map_err(|error| format!("GET {}: {}", self.url, error_chain(&error)))
        })
    }
}

/// Verifies access tokens. Cheap to clone: clones share one key cache.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    settings: AuthSettings,
    validation: Validation,
    source: Option<Arc<dyn JwksSource>>,
    cache: RwLock<KeyCache>,
    /// One fetch at a time; waiters reuse its result.
    fetching: tokio::sync::Mutex<()>,
}

struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
    refetch_interval: Duration,
    max_age: Duration,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.inner.settings.issuer)
            .field("audience", &self.inner.settings.audience)
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Fetches keys from `settings.jwks_url` when first needed, and again on an unknown `kid`.
    pub fn new(settings: AuthSettings) -> Self {
        let source = HttpJwks::new(settings.jwks_url.clone());
        Self::with_source(settings, source)
    }

    /// Keys from any [`JwksSource`] (the auth service reads its own database).
    pub fn with_source(settings: AuthSettings, source: impl JwksSource) -> Self {
        Self::build(settings, Some(Arc::new(source)), HashMap::new())
    }

    /// A fixed key set that is never refetched.
    pub fn from_jwks(settings: AuthSettings, jwks_json: &str) -> Result<Self, VerifyError> {
        let keys = parse_jwks(jwks_json)?;
        Ok(Self::build(settings, None, keys))
    }

    /// How often an unknown `kid` may trigger a refetch (default 1 s). A token with an unknown
    /// `kid` waits for the next allowed refetch when that is at most 2 s away, so a rotation
    /// costs no refusals.
    pub fn with_refetch_interval(self, interval: Duration) -> Self {
        self.write_cache().refetch_interval = interval;
        self
    }

    /// How long fetched keys are trusted before they are reloaded (default 5 min).
    pub fn with_max_age(self, max_age: Duration) -> Self {
        self.write_cache().max_age = max_age;
        self
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.inner.settings
    }

    fn build(
        settings: AuthSettings,
        source: Option<Arc<dyn JwksSource>>,
        keys: HashMap<String, DecodingKey>,
    ) -> Self {
        let mut validation = Validation::new(ALGORITHM);
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let fetched_at = source.is_none().then(Instant::now);
        Self {
            inner: Arc::new(Inner {
                settings,
                validation,
                source,
                cache: RwLock::new(KeyCache {
                    keys,
                    fetched_at,
                    attempted_at: fetched_at,
                    refetch_interval: DEFAULT_REFETCH_INTERVAL,
                    max_age: DEFAULT_MAX_AGE,
                }),
                fetching: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Checks `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        // The header is read before any key is touched: `alg` must be EdDSA, so `none` and
        // HS256-keyed-with-the-public-key never reach a verifier.
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            // jsonwebtoken has no `none`: such a header does not even parse.
            match algorithm_name(token) {
                Some(alg) if alg != "EdDSA" => VerifyError::DisallowedAlgorithm(alg),
                _ => VerifyError::Malformed,
            }
        })?;
        if header.alg != ALGORITHM {
            return Err(VerifyError::DisallowedAlgorithm(format!(
                "{:?}",
                header.alg
            )));
        }
        let kid = header.kid.ok_or(VerifyError::UnknownKey)?;
        let key = self.key_for(&kid).await?;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.inner.validation).map_err(
            |error| match error.kind() {
                ErrorKind::ExpiredSignature => VerifyError::Expired,
                ErrorKind::InvalidSignature => VerifyError::BadSignature,
                ErrorKind::InvalidIssuer => VerifyError::InvalidClaims("iss"),
                ErrorKind::InvalidAudience => VerifyError::InvalidClaims("aud"),
                ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
                    VerifyError::InvalidClaims("required claims")
                }
                ErrorKind::InvalidAlgorithm => {
                    VerifyError::DisallowedAlgorithm(format!("{:?}", header.alg))
                }
                _ => VerifyError::Malformed,
            },
        )?;
        data.claims.user_id()?;
        Ok(data.claims)
    }

    async fn key_for(&self, kid: &str) -> Result<DecodingKey, VerifyError> {
        let Some(source) = &self.inner.source else {
            return self.cached(kid).ok_or(VerifyError::UnknownKey);
        };
        if let Some(key) = self.cached(kid) {
            if !self.stale() {
                return Ok(key);
            }
            // A known key never waits for a fetch: if one is already running (possibly held up
            // by forged key ids), the cached key serves.
            let Ok(_one_fetch) = self.inner.fetching.try_lock() else {
                return Ok(key);
            };
            if self.stale() {
                self.fetch(source.as_ref()).await;
            }
            // A key the issuer withdrew is refused from now on.
            return self.cached(kid).ok_or(VerifyError::UnknownKey);
        }
        let _one_fetch = self.inner.fetching.lock().await;
        // Someone else may have fetched while this task waited.
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        // A kid we do not know is usually a freshly rotated key: wait for the next allowed fetch
        // rather than refuse, unless that is far off. Forged ids thus cost their sender time,
        // and the issuer at most one fetch per interval.
        let wait = self.until_next_attempt();
        if wait <= MAX_WAIT_FOR_REFETCH {
            tokio::time::sleep(wait).await;
            self.fetch(source.as_ref()).await;
        }
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let cache = self.read_cache();
        match (cache.keys.is_empty(), cache.fetched_at) {
            (true, None) => Err(VerifyError::KeysUnavailable(
                "no key set has been fetched yet".into(),
            )),
            _ => Err(VerifyError::UnknownKey),
        }
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, KeyCache> {
        self.inner
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, KeyCache> {
        self.inner
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cached(&self, kid: &str) -> Option<DecodingKey> {
        self.read_cache().keys.get(kid).cloned()
    }

    fn stale(&self) -> bool {
        let cache = self.read_cache();
        cache
            .fetched_at
            .is_none_or(|at| at.elapsed() >= cache.max_age)
            && attempt_allowed(&cache)
    }

    fn until_next_attempt(&self) -> Duration {
        let cache = self.read_cache();
        cache.attempted_at.map_or(Duration::ZERO, |at| {
            cache.refetch_interval.saturating_sub(at.elapsed())
        })
    }

    async fn fetch(&self, source: &dyn JwksSource) {
        let outcome = source
            .fetch()
            .await
            .and_then(|json| parse_jwks(&json).map_err(|error| error.to_string()));
        let mut cache = self.write_cache();
        let now = Instant::now();
        cache.attempted_at = Some(now);
        match outcome {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), source = ?source, "fetched the JWKS");
                cache.keys = keys;
                cache.fetched_at = Some(now);
            }
            // Keep the keys we have: an issuer outage must not log everyone out.
            Err(error) => tracing::warn!(%error, source = ?source, "cannot fetch the JWKS"),
        }
    }
}

fn attempt_allowed(cache: &KeyCache) -> bool {
    cache
        .attempted_at
        .is_none_or(|at| at.elapsed() >= cache.refetch_interval)
}

fn parse_jwks(json: &str) -> Result<HashMap<String, DecodingKey>, VerifyError> {
    let set: JwkSet = serde_json::from_str(json)
        .map_err(|error| VerifyError::KeysUnavailable(format!("invalid JWKS: {error}")))?;
    Ok(set
        .keys
        .iter()
        .filter_map(usable_ed25519_key)
        .map(|(kid, x)| (kid, DecodingKey::from_ed_der(&x)))
        .collect())
}

/// The `alg` a token's header claims, for the log, when it is not one jsonwebtoken knows.
fn algorithm_name(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let alg = value.get("alg")?.as_str()?;
    Some(alg.chars().take(16).collect())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::testing::TestIssuer;

    fn user() -> Uuid {
        Uuid::now_v7()
    }

    #[tokio::test]
    async fn a_valid_token_yields_its_claims() {
        let issuer = TestIssuer::new();
        let id = user();
        let token = issuer.token_for(id, "ada@example.com", &["customer"]);
        let claims = issuer.verifier().verify(&token).await.expect("valid");
        assert_eq!(claims.user_id(), Ok(id));
        assert_eq!(claims.email, "ada@example.com");
        assert_eq!(claims.roles, vec!["customer"]);
    }

    #[tokio::test]
    async fn every_forged_token_is_refused() {
        let issuer = TestIssuer::new();
        let verifier = issuer.verifier();
        for (what, token) in issuer.forged_tokens_for(user(), "eve@example.com", &["admin"]) {
            let outcome = verifier.verify(&token).await;
            assert!(outcome.is_err(), "{what} must be refused, got {outcome:?}");
        }
    }

    #[tokio::test]
    async fn the_refusals_say_why() {
        let issuer = TestIssuer::new();
        let verifier = issuer.verifier();
        let id = user();
        let email = "eve@example.com";
        assert_eq!(
            verifier
                .verify(&issuer.expired_token_for(id, email, &[]))
                .await,
            Err(VerifyError::Expired)
        );
        assert_eq!(
            verifier
                .verify(&issuer.other_key_token_for(id, email, &[]))
                .await,
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verifier
                .verify(&issuer.tampered_token_for(id, email, &[]))
                .await,
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verifier
                .verify(&issuer.alg_none_token_for(id, email, &[]))
                .await,
            Err(VerifyError::DisallowedAlgorithm("none".into()))
        );
        assert_eq!(
            verifier
                .verify(&issuer.hs256_with_public_key_token_for(id, email, &[]))
                .await,
            Err(VerifyError::DisallowedAlgorithm("HS256".into()))
        );
        assert_eq!(
            verifier
                .verify(&issuer.unknown_kid_token_for(id, email, &[]))
                .await,
            Err(VerifyError::UnknownKey)
        );
        assert_eq!(
            verifier.verify("not.a.jwt").await,
            Err(VerifyError::Malformed)
        );
        assert_eq!(verifier.verify("").await, Err(VerifyError::Malformed));
    }

    #[tokio::test]
    async fn issuer_and_audience_must_match() {
        let issuer = TestIssuer::new();
        let verifier = issuer.verifier();
        let mut claims = issuer.claims_for(user(), "a@example.com", &[]);
        claims.iss = "someone-else".into();
        assert_eq!(
            verifier.verify(&issuer.sign(&claims)).await,
            Err(VerifyError::InvalidClaims("iss"))
        );
        let mut claims = issuer.claims_for(user(), "a@example.com", &[]);
        claims.aud = "another-app".into();
        assert_eq!(
            verifier.verify(&issuer.sign(&claims)).await,
            Err(VerifyError::InvalidClaims("aud"))
        );
        let mut claims = issuer.claims_for(user(), "a@example.com", &[]);
        claims.sub = "not-a-uuid".into();
        assert_eq!(
            verifier.verify(&issuer.sign(&claims)).await,
            Err(VerifyError::InvalidClaims("sub"))
        );
    }

    #[tokio::test]
    async fn a_jwks_with_only_foreign_keys_verifies_nothing() {
        let issuer = TestIssuer::new();
        let hmac_only = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"k","alg":"HS256"}]}"#;
        let verifier =
            JwtVerifier::from_jwks(issuer.settings().clone(), hmac_only).expect("parses");
        let token = issuer.token_for(user(), "a@example.com", &[]);
        assert_eq!(verifier.verify(&token).await, Err(VerifyError::UnknownKey));
        assert!(JwtVerifier::from_jwks(issuer.settings().clone(), "not json").is_err());
    }

    /// Serves one issuer's keys, or another's after `swap`, counting fetches.
    #[derive(Debug)]
    struct CountingSource {
        jwks: std::sync::Mutex<String>,
        fetches: AtomicUsize,
        failing: std::sync::atomic::AtomicBool,
    }

    impl JwksSource for Arc<CountingSource> {
        fn fetch(&self) -> JwksFuture<'_> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let outcome = if self.failing.load(Ordering::SeqCst) {
                Err("down".to_owned())
            } else {
                Ok(self.jwks.lock().expect("lock").clone())
            };
            Box::pin(async move { outcome })
        }
    }

    fn counting(jwks: String) -> Arc<CountingSource> {
        Arc::new(CountingSource {
            jwks: std::sync::Mutex::new(jwks),
            fetches: AtomicUsize::new(0),
            failing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    #[tokio::test]
    async fn keys_are_fetched_once_and_cached() {
        let issuer = TestIssuer::new();
        let source = counting(issuer.jwks_json());
        let verifier = JwtVerifier::with_source(issuer.settings().clone(), source.clone());
        for _ in 0..5 {
            let token = issuer.token_for(user(), "a@example.com", &[]);
            verifier.verify(&token).await.expect("valid");
        }
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_rotated_key_is_picked_up_without_a_single_refusal() {
        let old = TestIssuer::new();
        let new = TestIssuer::new();
        let source = counting(old.jwks_json());
        let verifier = JwtVerifier::with_source(old.settings().clone(), source.clone())
            .with_refetch_interval(Duration::from_millis(300));
        verifier
            .verify(&old.token_for(user(), "a@example.com", &[]))
            .await
            .expect("old key");
        // The issuer rotates: both keys are published.
        *source.jwks.lock().expect("lock") = old.jwks_with(&new);
        // Right after the last fetch: the verifier waits for the next allowed one.
        let started = Instant::now();
        verifier
            .verify(&new.token_for(user(), "a@example.com", &[]))
            .await
            .expect("new key after a refetch");
        assert!(started.elapsed() >= Duration::from_millis(200));
        verifier
            .verify(&old.token_for(user(), "a@example.com", &[]))
            .await
            .expect("the previous key stays valid");
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn forged_key_ids_cause_at_most_one_fetch_per_interval() {
        let issuer = TestIssuer::new();
        let source = counting(issuer.jwks_json());
        let interval = Duration::from_millis(100);
        let verifier = JwtVerifier::with_source(issuer.settings().clone(), source.clone())
            .with_refetch_interval(interval);
        let started = Instant::now();
        let forged: Vec<String> = (0..8)
            .map(|_| issuer.unknown_kid_token_for(user(), "a@example.com", &[]))
            .collect();
        let outcomes = futures_join(&verifier, &forged).await;
        assert!(
            outcomes
                .iter()
                .all(|outcome| *outcome == Err(VerifyError::UnknownKey))
        );
        let fetches = source.fetches.load(Ordering::SeqCst);
        let allowed = started.elapsed().as_millis() / interval.as_millis() + 1;
        assert!(
            fetches as u128 <= allowed,
            "{fetches} fetches in {:?}",
            started.elapsed()
        );
        // Known keys are served meanwhile without waiting.
        verifier
            .verify(&issuer.token_for(user(), "a@example.com", &[]))
            .await
            .expect("valid");
    }

    #[tokio::test]
    async fn an_unknown_kid_does_not_wait_for_a_distant_refetch() {
        let issuer = TestIssuer::new();
        let source = counting(issuer.jwks_json());
        let verifier = JwtVerifier::with_source(issuer.settings().clone(), source.clone())
            .with_refetch_interval(Duration::from_secs(60));
        verifier
            .verify(&issuer.token_for(user(), "a@example.com", &[]))
            .await
            .expect("valid");
        let started = Instant::now();
        let forged = issuer.unknown_kid_token_for(user(), "a@example.com", &[]);
        assert_eq!(verifier.verify(&forged).await, Err(VerifyError::UnknownKey));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
    }

    async fn futures_join(
        verifier: &JwtVerifier,
        tokens: &[String],
    ) -> Vec<Result<Claims, VerifyError>> {
        let mut tasks = tokio::task::JoinSet::new();
        for token in tokens {
            let verifier = verifier.clone();
            let token = token.clone();
            tasks.spawn(async move { verifier.verify(&token).await });
        }
        let mut outcomes = Vec::new();
        while let Some(outcome) = tasks.join_next().await {
            outcomes.push(outcome.expect("task"));
        }
        outcomes
    }

    #[tokio::test]
    async fn an_issuer_outage_keeps_the_keys_already_known() {
        let issuer = TestIssuer::new();
        let source = counting(issuer.jwks_json());
        let verifier = JwtVerifier::with_source(issuer.settings().clone(), source.clone())
            .with_refetch_interval(Duration::ZERO)
            .with_max_age(Duration::ZERO);
        verifier
            .verify(&issuer.token_for(user(), "a@example.com", &[]))
            .await
            .expect("first");
        source.failing.store(true, Ordering::SeqCst);
        verifier
            .verify(&issuer.token_for(user(), "a@example.com", &[]))
            .await
            .expect("still valid while the issuer is down");
        assert!(source.fetches.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test]
    async fn no_keys_at_all_is_reported_as_unavailable() {
        let issuer = TestIssuer::new();
        let source = counting(String::new());
        source.failing.store(true, Ordering::SeqCst);
        let verifier = JwtVerifier::with_source(issuer.settings().clone(), source);
        let outcome = verifier
            .verify(&issuer.token_for(user(), "a@example.com", &[]))
            .await;
        assert!(
            matches!(outcome, Err(VerifyError::KeysUnavailable(_))),
            "{outcome:?}"
        );
    }
}
