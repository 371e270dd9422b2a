//! HTTP plumbing shared by every service: one error shape, health endpoints and the server.
//!
//! Every error answer, from any service or the gateway, is
//! `{"error": {"code": "...", "message": "...", "fields": {...}?}}`. Internal causes are logged
//! with the request's span and never shown to clients.

use std::collections::BTreeMap;
use std::fmt;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, Service as _};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::{App, HttpResponse, ResponseError, web};
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::json;
use tracing_actix_web::TracingLogger;

use crate::config::HttpSettings;
use crate::shutdown::Drain;

pub mod client;

/// The one error type every handler ends in. Handler-specific `thiserror` enums convert into it.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: BTreeMap<String, String>,
    /// Seconds the client should wait, sent as `Retry-After`.
    retry_after_secs: Option<u64>,
    cause: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: BTreeMap::new(),
            retry_after_secs: None,
            cause: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 429; with `retry_after_secs`, the answer says when to try again (`Retry-After`).
    pub fn too_many_requests(message: impl Into<String>, retry_after_secs: Option<u64>) -> Self {
        Self {
            retry_after_secs,
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
        }
    }

    /// 422 with one message per invalid field.
    pub fn validation(fields: BTreeMap<String, String>) -> Self {
        Self {
            fields,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "the request has invalid fields",
            )
        }
    }

    /// A failure that is our fault. The cause is logged; the client sees a generic message.
    ///
    /// One cause is the client's after all: text PostgreSQL cannot store (a NUL character)
    /// is refused with 422 wherever it reaches the database, instead of failing with 500.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        let cause = cause.into();
        if is_unstorable_text(&cause) {
            return Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_text",
                "text must not contain NUL characters",
            );
        }
        if is_pool_exhausted(&cause) {
            // No connection for the whole acquire timeout: every one stayed busy (overload),
            // or none could be opened (the database restarting). Nothing of this request was
            // written; 503 with Retry-After says so, where 500 would blame the request.
            return Self {
                retry_after_secs: Some(1),
                cause: Some(cause),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the service is busy or cannot reach its database; try again shortly",
                )
            };
        }
        Self {
            cause: Some(cause),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "an internal error occurred",
            )
        }
    }

    pub fn code(&self) -> &'static str {
        self.code
    }
}

/// On one line, the cause as its chain of messages: actix's request logger prints a failed
/// request's error with `{:?}`, and an `anyhow::Error`'s own `Debug` adds the backtrace it
/// captured when `RUST_BACKTRACE` is set (a megabyte per 500 in a release build under load,
/// written to the service's log while the machine is busiest).
impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("status", &self.status)
            .field("code", &self.code)
            .field("message", &self.message)
            .field("fields", &self.fields)
            .field("retry_after_secs", &self.retry_after_secs)
            .field(
                "cause",
                &self.cause.as_ref().map(|cause| format!("{cause:#}")),
            )
            .finish()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )?;
        if let Some(cause) = &self.cause {
            write!(f, " (cause: {cause:#})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// The database errors in `cause`'s chain.
fn sqlx_errors(cause: &anyhow::Error) -> impl Iterator<Item = &sqlx::Error> {
    cause.chain().filter_map(|error| error.downcast_ref())
}

/// PostgreSQL's "character not in repertoire" and "untranslatable character": text with NUL.
fn is_unstorable_text(cause: &anyhow::Error) -> bool {
    sqlx_errors(cause).any(|error| {
        error
            .as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| code == "22021" || code == "22P05")
    })
}

fn is_pool_exhausted(cause: &anyhow::Error) -> bool {
    sqlx_errors(cause).any(|error| matches!(error, sqlx::Error::PoolTimedOut))
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::internal(error)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if let Some(cause) = &self.cause {
            tracing::error!(error = %format!("{cause:#}"), code = self.code, "request failed");
        }
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after_secs {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds));
        }
        response.json(ErrorBody::from(self))
    }
}

/// Reads a JSON integer for `#[serde(deserialize_with = "...")]`, also when it is written with a
/// zero fraction (`5.0`): JSON Schema's `integer`, which the OpenAPI documents promise, includes
/// those.
pub fn integer<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::Deserialize as _;
    use serde::de::Error as _;
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole = match (number.as_i64(), number.as_f64()) {
        (Some(whole), _) => Some(whole),
        // Within ±2^53 every whole float is exact.
        (None, Some(float)) if float.fract() == 0.0 && float.abs() <= 9_007_199_254_740_992.0 =>
        {
            #[allow(clippy::cast_possible_truncation)]
            Some(float as i64)
        }
        _ => None,
    };
    whole
        .and_then(|whole| T::try_from(whole).ok())
        .ok_or_else(|| D::Error::custom(format!("expected an integer in range, got {number}")))
}

/// 405 in the shared shape, with the `Allow` header RFC 9110 requires (e.g. `GET, POST`).
pub fn method_not_allowed(allow: &str) -> HttpResponse {
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route only answers {allow}"),
    )
    .error_response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(allow) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    response
}

/// The shared error answer; its schema is the `Error` of every service's OpenAPI document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ErrorDetail<'a> {
    /// Machine-readable, e.g. `not_found`, `validation_failed`, `unauthorized`.
    #[schema(example = "not_found")]
    code: &'a str,
    message: &'a str,
    /// On 422 `validation_failed`: what is wrong with each field.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(required = false)]
    fields: &'a BTreeMap<String, String>,
}

impl<'a> From<&'a ApiError> for ErrorBody<'a> {
    fn from(error: &'a ApiError) -> Self {
        Self {
            error: ErrorDetail {
                code: error.code,
                message: &error.message,
                fields: &error.fields,
            },
        }
    }
}

/// A named dependency check for `/readyz`, such as "database" or "kafka".
#[derive(Clone)]
pub struct ReadinessCheck {
    name: &'static str,
    probe: Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>,
}

impl fmt::Debug for ReadinessCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadinessCheck")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ReadinessCheck {
    pub fn new<F>(name: &'static str, probe: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    {
        Self {
            name,
            probe: Arc::new(probe),
        }
    }

    /// Ready when a trivial query succeeds on the pool.
    pub fn database(pool: sqlx::PgPool) -> Self {
        Self::new("database", move || {
            let pool = pool.clone();
            Box::pin(async move {
                sqlx::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .map(drop)
                    .map_err(|error| error.to_string())
            })
        })
    }
}

/// How long one readiness probe may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Default)]
pub struct Readiness {
    checks: Vec<ReadinessCheck>,
}

impl Readiness {
    pub fn with(mut self, check: ReadinessCheck) -> Self {
        self.checks.push(check);
        self
    }

    async fn evaluate(&self) -> (bool, BTreeMap<&'static str, String>) {
        let outcomes = futures::future::join_all(self.checks.iter().map(|check| async {
            let outcome = match tokio::time::timeout(PROBE_TIMEOUT, (check.probe)()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            };
            (check.name, outcome)
        }))
        .await;
        let ready = outcomes.iter().all(|(_, outcome)| outcome.is_ok());
        let report = outcomes
            .into_iter()
            .map(|(name, outcome)| match outcome {
                Ok(()) => (name, "ok".to_owned()),
                Err(error) => {
                    tracing::warn!(check = name, %error, "readiness check failed");
                    (name, "unavailable".to_owned())
                }
            })
            .collect();
        (ready, report)
    }
}

/// 200 while the process serves; 503 `draining` once it is shutting down, so that a balancer's
/// health check stops sending it requests before its listener closes.
async fn healthz(drain: web::Data<Drain>) -> HttpResponse {
    if drain.is_draining() {
        return HttpResponse::ServiceUnavailable().json(json!({"status": "draining"}));
    }
    HttpResponse::Ok().json(json!({"status": "alive"}))
}

async fn readyz(readiness: web::Data<Readiness>, drain: web::Data<Drain>) -> HttpResponse {
    if drain.is_draining() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({"status": "draining", "checks": {}}));
    }
    let (ready, checks) = readiness.evaluate().await;
    let (mut response, status) = if ready {
        (HttpResponse::Ok(), "ready")
    } else {
        (HttpResponse::ServiceUnavailable(), "not_ready")
    };
    response.json(json!({"status": status, "checks": checks}))
}

async fn prometheus_metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render())
}

/// `http_responses_total{class}`: every answer by status class (`2xx`, `5xx`, …), for the
/// error-ratio alerts. One counter per class, so a request costs one increment.
fn count_response(status: u16) {
    const CLASSES: [&str; 6] = ["other", "1xx", "2xx", "3xx", "4xx", "5xx"];
    let class = CLASSES
        .get(usize::from(status / 100))
        .copied()
        .unwrap_or("other");
    metrics::counter!("http_responses_total", "class" => class).increment(1);
}

async fn unknown_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("no such route"))
}

/// Malformed query strings answer in the shared error shape instead of actix's plain text.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error, _request| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", error.to_string()).into()
    })
}

/// Malformed path segments answer in the shared error shape instead of actix's plain text.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|error, _request| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", error.to_string()).into()
    })
}

/// Malformed JSON bodies answer in the shared error shape instead of actix's plain text.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(256 * 1024)
        .error_handler(|error, _request| {
            let message = error.to_string();
            let api_error = match error {
                actix_web::error::JsonPayloadError::ContentType => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "expected Content-Type: application/json",
                ),
                actix_web::error::JsonPayloadError::Overflow { .. }
                | actix_web::error::JsonPayloadError::OverflowKnownLength { .. } => {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
                }
                actix_web::error::JsonPayloadError::Deserialize(_) => {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
                }
                _ => ApiError::bad_request(message),
            };
            api_error.into()
        })
}

pub fn bind(settings: &HttpSettings) -> std::io::Result<TcpListener> {
    TcpListener::bind(settings.address())
}

/// Starts an actix-web server on `listener` with request tracing, the shared error handling,
/// `/healthz`, `/readyz`, and whatever routes `configure` adds. An idle connection is closed
/// after `keep_alive` (`http.keep_alive_ms`), set here rather than left to actix's default so
/// that the clients' idle timeouts can be set below it.
///
/// SIGTERM and SIGINT stop it gracefully, after a drain ([`crate::shutdown`]): health endpoints
/// unready and every connection closed after its answer for `BAZAAR_DRAIN_MS`, then no new
/// connections, then in-flight requests finish (up to 10 s).
pub fn serve<F>(
    listener: TcpListener,
    keep_alive: Duration,
    readiness: Readiness,
    configure: F,
) -> std::io::Result<Server>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let drain = Drain::default();
    let server = start(listener, keep_alive, readiness, drain.clone(), configure)?;
    crate::shutdown::stop_on_signal(server.handle(), drain, crate::shutdown::drain_period());
    Ok(server)
}

/// [`serve`] without the signal handling: `drain` says when it drains.
fn start<F>(
    listener: TcpListener,
    keep_alive: Duration,
    readiness: Readiness,
    drain: Drain,
    configure: F,
) -> std::io::Result<Server>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let readiness = web::Data::new(readiness);
    let drain_data = web::Data::new(drain.clone());
    crate::metrics::handle();
    let server = actix_web::HttpServer::new(move || {
        let closing = drain_data.clone();
        App::new()
            .wrap_fn(move |request, service| {
                let answer = service.call(request);
                let closing = closing.clone();
                async move {
                    let mut answer = answer.await.inspect_err(|_| count_response(500))?;
                    count_response(answer.status().as_u16());
                    // A draining server hands back every connection it answers on, so that
                    // no caller keeps one it could write into as the listener closes.
                    if closing.is_draining() {
                        answer
                            .response_mut()
                            .head_mut()
                            .set_connection_type(ConnectionType::Close);
                    }
                    Ok(answer)
                }
            })
            .wrap(TracingLogger::<crate::telemetry::TracedRootSpan>::new())
            .app_data(json_config())
            .app_data(query_config())
            .app_data(path_config())
            .app_data(readiness.clone())
            .app_data(drain_data.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(prometheus_metrics))
            .configure(configure.clone())
            .default_service(web::to(unknown_route))
    })
    .keep_alive(keep_alive)
    // Every answer leaves at once: with Nagle's algorithm on (the OS default, which actix keeps),
    // an event-stream frame written after the response head waited for the head's ACK, which a
    // peer on a kept-alive connection delays by 40 ms. Through the gateway, customers saw each
    // order's statuses 40 ms late.
    .tcp_nodelay(true)
    .shutdown_timeout(10)
    // Signals are handled by stop_on_signal, which drains before stopping.
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn an_internal_error_prints_its_cause_on_one_line_without_a_backtrace() {
        let error = ApiError::internal(anyhow::anyhow!("pool timed out").context("checkout"));
        let printed = format!("{error:?}");
        assert!(printed.contains("checkout: pool timed out"), "{printed}");
        assert!(!printed.contains('\n'), "{printed}");
        assert!(!printed.contains("Stack backtrace"), "{printed}");
    }

    #[test]
    fn a_pool_that_timed_out_is_a_503_with_retry_after_and_the_cause_logged() {
        let error = ApiError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(error.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code(), "unavailable");
        assert!(format!("{error:?}").contains("pool timed out"), "{error:?}");
        let response = error.error_response();
        assert_eq!(
            response.headers().get(actix_web::http::header::RETRY_AFTER),
            Some(&actix_web::http::header::HeaderValue::from_static("1"))
        );

        let other = ApiError::from(sqlx::Error::RowNotFound);
        assert_eq!(other.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn the_server_closes_a_connection_idle_for_its_keep_alive() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let keep_alive = Duration::from_millis(300);
        let server = serve(listener, keep_alive, Readiness::default(), |_| {}).expect("serve");
        let stop = server.handle();
        tokio::spawn(server);

        let mut socket = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: bazaar\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        let mut buffer = [0_u8; 1024];
        let idle_since = loop {
            let read = socket.read(&mut buffer).await.expect("read");
            assert_ne!(read, 0, "closed before answering");
            answer.extend_from_slice(&buffer[..read]);
            if answer.ends_with(b"}") {
                break Instant::now();
            }
        };
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buffer))
            .await
            .expect("closed within 5 s")
            .expect("read");
        let idle = idle_since.elapsed();
        assert_eq!(read, 0, "nothing but the close follows");
        assert!(
            idle >= keep_alive.mul_f32(0.8) && idle < Duration::from_secs(2),
            "closed after {idle:?}"
        );
        stop.stop(false).await;
    }

    /// One request on a new connection; the raw answer.
    async fn ask(address: std::net::SocketAddr, path: &str) -> String {
        let mut socket = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        socket
            .write_all(format!("GET {path} HTTP/1.1\r\nhost: bazaar\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut answer = Vec::new();
        let mut buffer = [0_u8; 1024];
        loop {
            let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buffer))
                .await
                .expect("an answer within 5 s")
                .expect("read");
            answer.extend_from_slice(&buffer[..read]);
            if read == 0 || answer.ends_with(b"}") {
                break;
            }
        }
        String::from_utf8_lossy(&answer).to_ascii_lowercase()
    }

    #[tokio::test]
    async fn a_draining_server_is_unready_and_closes_every_connection_it_answers_on() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let drain = Drain::default();
        let server = start(
            listener,
            Duration::from_secs(15),
            Readiness::default(),
            drain.clone(),
            |_| {},
        )
        .expect("serve");
        let stop = server.handle();
        tokio::spawn(server);

        let healthy = ask(address, "/healthz").await;
        assert!(healthy.starts_with("http/1.1 200"), "{healthy}");
        assert!(!healthy.contains("connection: close"), "{healthy}");

        drain.begin();
        let draining = ask(address, "/healthz").await;
        assert!(draining.starts_with("http/1.1 503"), "{draining}");
        assert!(draining.contains("\"draining\""), "{draining}");
        assert!(draining.contains("connection: close"), "{draining}");
        let unready = ask(address, "/readyz").await;
        assert!(unready.starts_with("http/1.1 503"), "{unready}");
        // Other routes are still served while draining, each on a connection closed after it.
        let served = ask(address, "/nowhere").await;
        assert!(served.starts_with("http/1.1 404"), "{served}");
        assert!(served.contains("connection: close"), "{served}");
        stop.stop(true).await;
    }
}
