//! The auth API: `/auth/register`, `/auth/login`, `/auth/refresh`, `/auth/logout`,
//! `/auth/logout-everywhere`, `/auth/me` and the JWKS at `/.well-known/jwks.json`, each declared
//! once on its handler. The gateway
//! publishes them as `/api/auth/*` (and the JWKS where it is).
// utoipa's `#[utoipa::path]` re-emits the types it is given with their full paths.
#![allow(unused_qualifications)]

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, get, post, web};
use auth_kit::{AuthenticatedUser, JwtVerifier};
use events::TraceParent;
use platform::http::ApiError;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{OpenApi, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::accounts::{self, RegisterFailure};
use crate::addresses::TrustedProxies;
use crate::config::{LoginLimitSettings, RegisterLimitSettings};
use crate::db;
use crate::domain::{self, FieldErrors, Throttle, ThrottleWindow};
use crate::passwords::Passwords;
use crate::sessions::{RefreshFailure, Sessions, hash_refresh_token};

/// What the handlers share besides the pool.
#[derive(Debug, Clone)]
pub struct AuthState {
    pub sessions: Sessions,
    pub passwords: Passwords,
    pub login_limit: LoginLimitSettings,
    pub register_limit: RegisterLimitSettings,
    /// Whose `X-Forwarded-For` names the client address that throttling counts by.
    pub trusted_proxies: TrustedProxies,
}

/// The auth service's routes; `verifier` checks the access tokens of the routes that need one.
pub fn routes(
    state: web::Data<AuthState>,
    verifier: web::Data<JwtVerifier>,
) -> impl Fn(&mut web::ServiceConfig) + Send + Sync + Clone + 'static {
    move |config| {
        config.app_data(state.clone()).app_data(verifier.clone());
        platform::openapi::register(config, handlers);
    }
}

/// Every route, each declared once on its handler; served by [`routes`], described by [`openapi`].
fn handlers(config: &mut ServiceConfig<'_>) {
    config
        .service(register)
        .service(login)
        .service(refresh)
        .service(logout)
        .service(logout_everywhere)
        .service(me)
        .service(jwks);
}

#[derive(OpenApi)]
#[openapi(
    info(title = "auth service", description = "Accounts and tokens."),
    tags((name = "auth", description = "Accounts and tokens"))
)]
struct Api;

/// The auth service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    platform::openapi::document(Api::openapi(), handlers)
}

/// Turns a handler's error enum into the shared error answer.
macro_rules! api_error_response {
    ($error:ty) => {
        impl ResponseError for $error {
            fn status_code(&self) -> StatusCode {
                ApiError::from(self).status_code()
            }

            fn error_response(&self) -> HttpResponse {
                ApiError::from(self).error_response()
            }
        }
    };
}

fn internal(error: &anyhow::Error) -> ApiError {
    ApiError::internal(anyhow::anyhow!("{error:#}"))
}

fn trace_of(request: &HttpRequest) -> Option<TraceParent> {
    request
        .headers()
        .get("traceparent")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The schema states what [`domain::validate_registration`] accepts.
#[derive(Debug, Deserialize, ToSchema)]
struct RegisterRequest {
    /// Unique regardless of case.
    #[serde(default)]
    #[schema(
        required = true,
        example = "ada@example.com",
        max_length = 254,
        pattern = r"^[A-Za-z0-9._%+-]{1,64}@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$"
    )]
    email: String,
    /// 8 to 128 characters, not only spaces, not the e-mail address.
    #[serde(default)]
    #[schema(
        required = true,
        example = "correct horse battery",
        min_length = 8,
        max_length = 128,
        pattern = r"\S"
    )]
    password: String,
    /// The display name; no control characters.
    #[serde(default)]
    #[schema(
        required = true,
        example = "Ada Lovelace",
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    name: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Account)]
struct AccountView {
    id: uuid::Uuid,
    email: String,
    name: String,
}

#[derive(Debug, thiserror::Error)]
enum RegisterError {
    #[error("invalid fields: {0:?}")]
    Invalid(FieldErrors),
    #[error("registration: {0}")]
    Throttle(#[from] ThrottleError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<&RegisterError> for ApiError {
    fn from(error: &RegisterError) -> Self {
        match error {
            RegisterError::Invalid(fields) => ApiError::validation(fields.clone()),
            RegisterError::Throttle(throttle) => {
                throttle.answer("too many registrations from this address; try again later")
            }
            RegisterError::Internal(cause) => internal(cause),
        }
    }
}

api_error_response!(RegisterError);

/// Answers alike whether the address was free or already had an account, so that neither the
/// answer nor its timing tells anyone which addresses have accounts: a taken address gets the
/// same 201 (with an id of no account), after the same password hash. Its owner can still log
/// in; the registrant cannot, and learns no more than a wrong password tells.
#[utoipa::path(
    tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered, or the address already had an account (the answers do not differ)", body = AccountView),
        (status = 422, description = "Invalid fields", body = platform::http::ErrorBody),
        (status = 429, description = "Too many registrations from this address",
            body = platform::http::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
)]
#[post("/auth/register")]
async fn register(
    pool: web::Data<PgPool>,
    state: web::Data<AuthState>,
    request: HttpRequest,
    body: web::Json<RegisterRequest>,
) -> Result<HttpResponse, RegisterError> {
    let account = domain::validate_registration(&body.email, &body.password, &body.name)
        .map_err(RegisterError::Invalid)?;
    let limits = &state.register_limit;
    let address = client_address(&request, &state.trusted_proxies);
    count_attempt(
        &pool,
        &format!("register:{address}"),
        limits.max_per_address,
        Duration::from_secs(limits.window_secs),
    )
    .await?;
    let id = match accounts::register(
        &pool,
        &state.passwords,
        &account,
        domain::customer_roles(),
        trace_of(&request).as_ref(),
    )
    .await
    {
        Ok(registered) => registered.id,
        Err(RegisterFailure::DuplicateEmail) => {
            tracing::info!("registration for an address that has an account; answered alike");
            uuid::Uuid::now_v7()
        }
        Err(RegisterFailure::Internal(cause)) => return Err(RegisterError::Internal(cause)),
    };
    Ok(HttpResponse::Created().json(AccountView {
        id,
        email: account.email,
        name: account.name,
    }))
}

/// The schema states what [`domain::validate_login`] accepts.
#[derive(Debug, Deserialize, ToSchema)]
struct LoginRequest {
    #[serde(default)]
    #[schema(
        required = true,
        example = "ada@example.com",
        min_length = 1,
        max_length = 254,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*\S[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    email: String,
    #[serde(default)]
    #[schema(required = true, example = "correct horse battery", min_length = 1)]
    password: String,
}

#[derive(Debug, thiserror::Error)]
enum LoginError {
    #[error("invalid fields: {0:?}")]
    Invalid(FieldErrors),
    /// Unknown address and wrong password answer alike.
    #[error("wrong credentials")]
    WrongCredentials,
    #[error("login: {0}")]
    Throttle(#[from] ThrottleError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<&LoginError> for ApiError {
    fn from(error: &LoginError) -> Self {
        match error {
            LoginError::Invalid(fields) => ApiError::validation(fields.clone()),
            LoginError::WrongCredentials => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "wrong e-mail address or password",
            ),
            LoginError::Throttle(throttle) => {
                throttle.answer("too many login attempts; try again later")
            }
            LoginError::Internal(cause) => internal(cause),
        }
    }
}

api_error_response!(LoginError);

impl From<sqlx::Error> for LoginError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(error.into())
    }
}

/// The client's address as throttling counts it: the peer, or what a trusted proxy says it
/// forwarded for (see [`TrustedProxies::client`]).
fn client_address(request: &HttpRequest, proxies: &TrustedProxies) -> String {
    let Some(peer) = request.peer_addr() else {
        return "unknown".to_owned();
    };
    let forwarded: Vec<&str> = request
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    proxies.client(peer.ip(), forwarded.into_iter()).to_string()
}

#[derive(Debug, thiserror::Error)]
enum ThrottleError {
    #[error("too many attempts; retry after {retry_after_secs} s")]
    Limited { retry_after_secs: u64 },
    #[error("throttle counter: {0}")]
    Database(#[from] sqlx::Error),
}

impl ThrottleError {
    fn answer(&self, message: &str) -> ApiError {
        match self {
            Self::Limited { retry_after_secs } => {
                ApiError::too_many_requests(message, Some(*retry_after_secs))
            }
            Self::Database(cause) => ApiError::internal(anyhow::anyhow!("{cause}")),
        }
    }
}

/// Counts this attempt in `bucket` and judges it against `limit`. Counting comes first, in one
/// atomic statement, so concurrent attempts cannot slip past the limit between a check and an
/// increment; the window it was counted in is returned, to give the count back.
async fn count_attempt(
    pool: &PgPool,
    bucket: &str,
    limit: u32,
    window: Duration,
) -> Result<ThrottleWindow, ThrottleError> {
    let (counted, now) = db::count_in_window(pool, bucket, window).await?;
    match domain::throttle(counted, limit, window, now) {
        Throttle::Allowed => Ok(counted),
        Throttle::Limited { retry_after_secs } => {
            tracing::warn!(bucket, retry_after_secs, "throttled");
            Err(ThrottleError::Limited { retry_after_secs })
        }
    }
}

#[utoipa::path(
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = crate::sessions::TokenPair),
        (status = 401, description = "Wrong e-mail address or password (the same answer for both)", body = platform::http::ErrorBody),
        (status = 422, description = "Missing fields", body = platform::http::ErrorBody),
        (status = 429, description = "Too many wrong passwords from this address (for this account, or for any)",
            body = platform::http::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
)]
#[post("/auth/login")]
async fn login(
    pool: web::Data<PgPool>,
    state: web::Data<AuthState>,
    request: HttpRequest,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, LoginError> {
    let email = domain::validate_login(&body.email, &body.password).map_err(LoginError::Invalid)?;
    let limits = &state.login_limit;
    let window = Duration::from_secs(limits.window_secs);
    let address = client_address(&request, &state.trusted_proxies);
    // Every attempt is counted before the password is checked and a right password gives its
    // count back, so only wrong passwords use up an allowance, and only the guesser's own: the
    // address's, and the account's from that address. A stranger elsewhere cannot shut the
    // owner out.
    let address_bucket = format!("address:{address}");
    let address_window = count_attempt(
        &pool,
        &address_bucket,
        limits.max_failures_per_address,
        window,
    )
    .await?;
    let account_bucket = format!("account-address:{address} {}", email.to_lowercase());
    count_attempt(
        &pool,
        &account_bucket,
        limits.max_failures_per_account_address,
        window,
    )
    .await?;

    let user = db::find_user_by_email(&pool, &email).await?;
    let matches = state
        .passwords
        .verify(
            body.password.clone(),
            user.as_ref().map(|user| user.password_hash.clone()),
        )
        .await
        .map_err(anyhow::Error::from)?;
    let user = match user {
        Some(user) if matches => user,
        _ => return Err(LoginError::WrongCredentials),
    };
    db::reset_bucket(&pool, &account_bucket).await?;
    db::refund_in_window(&pool, &address_bucket, address_window.started_at).await?;
    let pair = state.sessions.start(&pool, &user).await?;
    tracing::info!(user_id = %user.id, "logged in");
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(pair))
}

#[derive(Debug, Deserialize, ToSchema)]
struct RefreshRequest {
    /// Single use: a new pair comes back.
    #[serde(default)]
    #[schema(required = true, min_length = 1, pattern = r"\S")]
    refresh_token: String,
}

/// The presented refresh token, trimmed; a blank one is a missing field.
fn presented_refresh_token(raw: &str) -> Result<&str, FieldErrors> {
    let token = raw.trim();
    if token.is_empty() {
        return Err(FieldErrors::from([(
            "refresh_token".to_owned(),
            "is required".to_owned(),
        )]));
    }
    Ok(token)
}

#[derive(Debug, thiserror::Error)]
enum RefreshError {
    #[error("invalid fields: {0:?}")]
    Invalid(FieldErrors),
    #[error("refused refresh token")]
    Refused,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<&RefreshError> for ApiError {
    fn from(error: &RefreshError) -> Self {
        match error {
            RefreshError::Invalid(fields) => ApiError::validation(fields.clone()),
            RefreshError::Refused => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_refresh_token",
                "the refresh token is not valid; log in again",
            ),
            RefreshError::Internal(cause) => internal(cause),
        }
    }
}

api_error_response!(RefreshError);

#[utoipa::path(
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new pair; the presented refresh token is spent", body = crate::sessions::TokenPair),
        (status = 401, description = "Unknown, expired, revoked or already used refresh token", body = platform::http::ErrorBody),
        (status = 422, description = "Missing refresh_token", body = platform::http::ErrorBody),
    ),
)]
#[post("/auth/refresh")]
async fn refresh(
    pool: web::Data<PgPool>,
    state: web::Data<AuthState>,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, RefreshError> {
    let presented = presented_refresh_token(&body.refresh_token).map_err(RefreshError::Invalid)?;
    match state.sessions.refresh(&pool, presented).await {
        Ok(pair) => Ok(HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(pair)),
        Err(RefreshFailure::Invalid(why)) => {
            tracing::info!(why, "refresh refused");
            Err(RefreshError::Refused)
        }
        Err(RefreshFailure::Internal(cause)) => Err(RefreshError::Internal(cause)),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
struct LogoutRequest {
    /// The refresh token of the session to end.
    #[serde(default)]
    #[schema(required = true, min_length = 1, pattern = r"\S")]
    refresh_token: String,
}

#[derive(Debug, thiserror::Error)]
enum LogoutError {
    #[error("invalid fields: {0:?}")]
    Invalid(FieldErrors),
    #[error(transparent)]
    Internal(#[from] sqlx::Error),
}

impl From<&LogoutError> for ApiError {
    fn from(error: &LogoutError) -> Self {
        match error {
            LogoutError::Invalid(fields) => ApiError::validation(fields.clone()),
            LogoutError::Internal(cause) => ApiError::internal(anyhow::anyhow!("{cause}")),
        }
    }
}

api_error_response!(LogoutError);

/// Ends the session of the given refresh token (its whole family). The refresh token is the
/// credential: no access token is needed, so a client whose access token has expired can still
/// log out. The answer is the same whether the token was known or not. Access tokens already
/// issued stay valid until they expire (minutes).
#[utoipa::path(
    tag = "auth",
    request_body = LogoutRequest,
    responses(
        (status = 204, description = "Logged out (also for an unknown or already revoked token)"),
        (status = 422, description = "Missing refresh_token", body = platform::http::ErrorBody),
    ),
)]
#[post("/auth/logout")]
async fn logout(
    pool: web::Data<PgPool>,
    body: web::Json<LogoutRequest>,
) -> Result<HttpResponse, LogoutError> {
    let presented = presented_refresh_token(&body.refresh_token).map_err(LogoutError::Invalid)?;
    let revoked = db::revoke_session(&pool, &hash_refresh_token(presented)).await?;
    tracing::info!(revoked, "logged out");
    Ok(HttpResponse::NoContent().finish())
}

/// Ends every session of the caller: every refresh-token family, on every device. Access
/// tokens already issued stay valid until they expire (minutes).
#[utoipa::path(
    tag = "auth",
    security(("bearer" = [])),
    responses((status = 204, description = "Every session of the caller is ended")),
)]
#[post("/auth/logout-everywhere")]
async fn logout_everywhere(
    user: AuthenticatedUser,
    pool: web::Data<PgPool>,
) -> Result<HttpResponse, LogoutError> {
    let revoked = db::revoke_all_sessions_of_user(&pool, user.user_id).await?;
    tracing::info!(user_id = %user.user_id, revoked, "signed out everywhere");
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Me)]
struct MeView {
    id: uuid::Uuid,
    email: String,
    name: String,
    #[schema(example = json!(["customer"]))]
    roles: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
enum MeError {
    #[error("the account no longer exists")]
    Gone,
    #[error(transparent)]
    Internal(#[from] sqlx::Error),
}

impl From<&MeError> for ApiError {
    fn from(error: &MeError) -> Self {
        match error {
            MeError::Gone => ApiError::unauthorized("the account no longer exists"),
            MeError::Internal(cause) => ApiError::internal(anyhow::anyhow!("{cause}")),
        }
    }
}

api_error_response!(MeError);

#[utoipa::path(
    tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller's account", body = MeView)),
)]
#[get("/auth/me")]
async fn me(user: AuthenticatedUser, pool: web::Data<PgPool>) -> Result<HttpResponse, MeError> {
    let account = db::find_user(pool.get_ref(), user.user_id)
        .await?
        .ok_or(MeError::Gone)?;
    Ok(HttpResponse::Ok().json(MeView {
        id: account.id,
        email: account.email,
        name: account.display_name,
        roles: account.roles,
    }))
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct JwksError(#[from] anyhow::Error);

impl From<&JwksError> for ApiError {
    fn from(error: &JwksError) -> Self {
        internal(&error.0)
    }
}

api_error_response!(JwksError);

/// RFC 7517 key set as [`auth_kit::keys::jwks_json`] writes it; every key is an Ed25519 public
/// key.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct Jwk {
    #[schema(example = "OKP")]
    kty: String,
    #[schema(example = "Ed25519")]
    crv: String,
    x: String,
    kid: String,
    #[schema(example = "EdDSA")]
    alg: String,
    #[schema(example = "sig", rename = "use")]
    usage: String,
}

#[utoipa::path(
    tag = "auth",
    responses((status = 200, description = "The public keys access tokens are signed with",
        body = Jwks, content_type = "application/jwk-set+json")),
)]
#[get("/.well-known/jwks.json")]
async fn jwks(pool: web::Data<PgPool>) -> Result<HttpResponse, JwksError> {
    let document = crate::keys::jwks(&pool).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/jwk-set+json")
        .insert_header((header::CACHE_CONTROL, "public, max-age=60"))
        .body(document))
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn the_client_address_is_believed_from_trusted_proxies_only() {
        let request = TestRequest::default()
            .peer_addr("10.0.0.5:4000".parse().expect("addr"))
            .insert_header(("x-forwarded-for", "1.2.3.4, 203.0.113.9"))
            .to_http_request();
        let gateway = TrustedProxies::parse("10.0.0.5").expect("list");
        assert_eq!(client_address(&request, &gateway), "203.0.113.9");
        assert_eq!(
            client_address(&request, &TrustedProxies::default()),
            "10.0.0.5"
        );
    }

    #[test]
    fn too_many_attempts_carries_retry_after() {
        let response = LoginError::Throttle(ThrottleError::Limited {
            retry_after_secs: 42,
        })
        .error_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from(42u64))
        );
    }

    #[test]
    fn openapi_the_committed_document_is_current() {
        platform::openapi::assert_committed("auth", &openapi());
    }

    #[test]
    fn the_documented_jwks_is_what_the_service_writes() {
        let key = auth_kit::keys::SigningKey::generate().expect("key");
        let written: serde_json::Value =
            serde_json::from_str(&auth_kit::keys::jwks_json([key.public_jwk()])).expect("json");
        let document = serde_json::to_value(openapi()).expect("json");
        let jwk = &document["components"]["schemas"]["Jwk"];
        let written_key = written["keys"][0].as_object().expect("a key");
        for field in jwk["required"].as_array().expect("required") {
            let field = field.as_str().expect("name");
            assert!(
                written_key.contains_key(field),
                "{field} in {written_key:?}"
            );
        }
        for field in written_key.keys() {
            assert!(
                jwk["properties"].get(field).is_some(),
                "{field} is not documented"
            );
        }
    }

    #[test]
    fn the_documented_name_limit_is_the_enforced_one() {
        let document = serde_json::to_value(openapi()).expect("json");
        let fields = &document["components"]["schemas"]["RegisterRequest"]["properties"];
        assert_eq!(fields["name"]["maxLength"], domain::MAX_NAME_CHARS);
    }

    #[test]
    fn wrong_credentials_never_say_which_part_was_wrong() {
        let api = ApiError::from(&LoginError::WrongCredentials);
        assert_eq!(api.status_code(), StatusCode::UNAUTHORIZED);
        assert_eq!(api.code(), "invalid_credentials");
    }
}
