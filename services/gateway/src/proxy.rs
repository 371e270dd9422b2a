//! Forwarding of public API calls to the service that owns them. Request bodies are small and
//! bounded, so they are read whole; responses are streamed back as they arrive, which is what
//! lets an event stream through.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName};
use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use platform::http::ApiError;
use platform::http::client::{HttpClient, IDEMPOTENCY_KEY, SendFailure, error_chain};
use tokio::time::Instant;

use crate::balance::Balancer;

/// One upstream service: its instances and the HTTP client used to reach them.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: &'static str,
    pub instances: Arc<Balancer>,
    pub client: HttpClient,
    /// Deadline for the response headers, and for the whole body unless streaming.
    pub timeout: Duration,
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

/// Set by the gateway itself; whatever a client sent under these names is dropped.
const GATEWAY_OWNED: [&str; 4] = [
    "x-request-id",
    "traceparent",
    "x-forwarded-for",
    "forwarded",
];

fn is_forwardable(name: &str, connection_listed: &[String]) -> bool {
    !HOP_BY_HOP.contains(&name)
        && name != "host"
        && name != "content-length"
        && !connection_listed.iter().any(|listed| listed == name)
}

/// Header names the `Connection` header declares hop-by-hop.
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("connection")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

/// What the gateway adds to every forwarded request.
#[derive(Debug, Clone)]
pub struct Forwarding {
    pub request_id: String,
    pub traceparent: String,
    pub client_ip: Option<IpAddr>,
}

/// Forwards the request to an instance of `upstream` at `path` (plus the original query) and
/// streams its answer back.
///
/// A request that could not connect to an instance reached nobody: it goes to another instance,
/// whatever its method. One whose connection closed before any answer goes to another instance
/// (or, with one instance, once more to the same on a new connection) only when it is safe to
/// repeat: GET, HEAD, or with an `Idempotency-Key`. Every attempt together has
/// `upstream.timeout` to get the response head.
pub async fn forward(
    upstream: &Upstream,
    path: &str,
    request: &HttpRequest,
    body: web::Bytes,
    forwarding: &Forwarding,
    streaming: bool,
) -> Result<HttpResponse, ApiError> {
    let method =
        reqwest::Method::from_bytes(request.method().as_str().as_bytes()).map_err(|_| {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "unsupported method",
            )
        })?;
    let safe_to_repeat = matches!(method, reqwest::Method::GET | reqwest::Method::HEAD)
        || request.headers().contains_key(IDEMPOTENCY_KEY);
    let deadline = Instant::now() + upstream.timeout;
    let balancer = &upstream.instances;
    let mut tried: Vec<usize> = Vec::new();
    let mut attempts = 0_usize;
    let mut same_again = None;
    let (answer, in_flight) = loop {
        // Never `None`: the first pick has every instance to choose from, and a failed
        // attempt goes on only while one is left.
        let Some(index) = same_again.take().or_else(|| balancer.pick(&tried)) else {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                format!("the {} service is unavailable", upstream.name),
            ));
        };
        // A second attempt never meets another pooled connection an instance closed.
        let fresh_connection = attempts > 0;
        attempts += 1;
        if !tried.contains(&index) {
            tried.push(index);
        }
        let base_url = &balancer.instance(index).base_url;
        let outgoing = build(
            upstream,
            base_url,
            path,
            method.clone(),
            request,
            &body,
            forwarding,
            streaming,
            deadline,
        )
        .map_err(|error| ApiError::internal(anyhow::Error::new(error)))?;
        let in_flight = balancer.begin(index);
        let sent = tokio::time::timeout_at(
            deadline,
            upstream.client.execute(outgoing, fresh_connection),
        )
        .await;
        let error = match sent {
            Ok(Ok(answer)) => break (answer, in_flight),
            Ok(Err(error)) => error,
            Err(_) => return Err(upstream_timeout(upstream.name)),
        };
        drop(in_flight);
        let failure = SendFailure::of(&error);
        if failure == SendFailure::NotConnected {
            balancer.refused(index);
        }
        if !failure.calls_for_another_instance(safe_to_repeat) {
            return Err(upstream_failure(upstream.name, &error));
        }
        let elsewhere = balancer.pick(&tried).is_some();
        if !elsewhere {
            // With one instance left, a connection that closed before any answer is worth one
            // more try on a new connection (a kept-alive one it had just closed).
            if failure == SendFailure::ClosedBeforeAnswer && attempts == 1 {
                same_again = Some(index);
            } else {
                return Err(upstream_failure(upstream.name, &error));
            }
        }
        tracing::info!(
            upstream = upstream.name,
            instance = %base_url,
            ?failure,
            error = %error_chain(&error),
            "no answer from this instance; sending the request {}",
            if elsewhere { "to another instance" } else { "again on a new connection" }
        );
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    let listed = connection_listed_reqwest(answer.headers());
    for (name, value) in answer.headers() {
        if is_forwardable(name.as_str(), &listed)
            && let Ok(name) = HeaderName::from_bytes(name.as_str().as_bytes())
        {
            response.append_header((name, value.as_bytes()));
        }
    }
    if streaming {
        // Proxies in front of the gateway must not hold events back either.
        response.insert_header(("x-accel-buffering", "no"));
    }
    let length = answer.content_length();
    let name = upstream.name;
    let stream = answer.bytes_stream().map(move |chunk| {
        // The request counts against its instance until its body has been passed on.
        let _counted = &in_flight;
        chunk.map_err(|error| {
            tracing::warn!(
                upstream = name,
                error = %error_chain(&error),
                "upstream body failed midway"
            );
            std::io::Error::other("upstream body failed")
        })
    });
    Ok(match length {
        Some(length) if !streaming => response.body(SizedStream::new(length, stream)),
        _ => response.body(BodyStream::new(stream)),
    })
}

/// The request for one attempt at the instance at `base_url`.
#[allow(clippy::too_many_arguments)]
fn build(
    upstream: &Upstream,
    base_url: &str,
    path: &str,
    method: reqwest::Method,
    request: &HttpRequest,
    body: &web::Bytes,
    forwarding: &Forwarding,
    streaming: bool,
    deadline: Instant,
) -> reqwest::Result<reqwest::Request> {
    let mut url = format!("{base_url}{path}");
    if !request.query_string().is_empty() {
        url.push('?');
        url.push_str(request.query_string());
    }
    let mut outgoing = upstream.client.request(method, &url).body(body.clone());
    if !streaming {
        // What is left of the deadline, for the head and the whole body.
        outgoing = outgoing.timeout(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        );
    }
    let listed = connection_listed(request.headers());
    for (name, value) in request.headers() {
        let name = name.as_str();
        if is_forwardable(name, &listed) && !GATEWAY_OWNED.contains(&name) {
            outgoing = outgoing.header(name, value.as_bytes());
        }
    }
    outgoing = outgoing
        .header("x-request-id", &forwarding.request_id)
        .header("traceparent", &forwarding.traceparent);
    if let Some(ip) = forwarding.client_ip {
        // Only the peer the gateway saw: a client's own X-Forwarded-For is not evidence.
        outgoing = outgoing.header("x-forwarded-for", ip.to_string());
    }
    outgoing.build()
}

fn connection_listed_reqwest(headers: &reqwest::header::HeaderMap) -> Vec<String> {
    headers
        .get_all("connection")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

fn upstream_timeout(name: &str) -> ApiError {
    tracing::warn!(upstream = name, "upstream did not answer in time");
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "upstream_timeout",
        format!("the {name} service did not answer in time"),
    )
}

fn upstream_failure(name: &str, error: &reqwest::Error) -> ApiError {
    if error.is_timeout() {
        return upstream_timeout(name);
    }
    tracing::warn!(upstream = name, error = %error_chain(error), "upstream call failed");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "upstream_unavailable",
        format!("the {name} service is unavailable"),
    )
}

/// One client for every upstream, keeping idle connections for `pool_idle_timeout` (below the
/// upstreams' keep-alive). No overall timeout here: each request sets its own, and event
/// streams have none.
pub fn client(pool_idle_timeout: Duration) -> reqwest::Result<HttpClient> {
    HttpClient::new(pool_idle_timeout, |builder| {
        builder.connect_timeout(Duration::from_secs(2))
    })
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_headers_stay_behind() {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("connection"),
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        let listed = connection_listed(&headers);
        assert!(!is_forwardable("x-secret-hop", &listed));
        assert!(!is_forwardable("transfer-encoding", &listed));
        assert!(!is_forwardable("host", &listed));
        assert!(is_forwardable("authorization", &listed));
        assert!(is_forwardable("idempotency-key", &listed));
    }
}
