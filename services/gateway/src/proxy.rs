//! Forwarding of public API calls to the service that owns them.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use platform::http::ApiError;

/// One upstream service and the HTTP client used to reach it.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: &'static str,
    pub base_url: String,
    pub client: reqwest::Client,
}

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_forwardable(name: &str) -> bool {
    !HOP_BY_HOP.contains(&name) && name != "host" && name != "content-length"
}

/// Forwards the request to `upstream` at `path` (plus the original query), returning its answer.
pub async fn forward(
    upstream: &Upstream,
    path: &str,
    request: &HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let mut url = format!("{}{}", upstream.base_url, path);
    if !request.query_string().is_empty() {
        url.push('?');
        url.push_str(request.query_string());
    }
    let method =
        reqwest::Method::from_bytes(request.method().as_str().as_bytes()).map_err(|_| {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "unsupported method",
            )
        })?;
    let mut outgoing = upstream.client.request(method, &url).body(body);
    for (name, value) in request.headers() {
        if is_forwardable(name.as_str()) {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = outgoing
        .send()
        .await
        .map_err(|error| upstream_failure(upstream.name, &error))?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    for (name, value) in answer.headers() {
        if is_forwardable(name.as_str()) {
            response.insert_header((name.as_str(), value.as_bytes()));
        }
    }
    let bytes = answer
        .bytes()
        .await
        .map_err(|error| upstream_failure(upstream.name, &error))?;
    Ok(response.body(bytes))
}

fn upstream_failure(name: &str, error: &reqwest::Error) -> ApiError {
    tracing::warn!(upstream = name, error = %error, "upstream call failed");
    if error.is_timeout() {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("the {name} service did not answer in time"),
        )
    } else {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            format!("the {name} service is unavailable"),
        )
    }
}

pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}
