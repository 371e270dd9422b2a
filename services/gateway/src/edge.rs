//! What the gateway does to every public request before routing: a request id, a W3C trace
//! context, and CORS.

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use events::TraceParent;

pub const REQUEST_ID: &str = "x-request-id";

/// The request id and trace context of one request, in its extensions.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub traceparent: TraceParent,
}

/// A client's own request id is kept when it is short and plain, so its logs and ours line up;
/// anything else is replaced.
fn request_id_from(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            (1..=128).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

/// Continues the caller's trace with a new span, or starts one.
fn trace_from(headers: &HeaderMap) -> TraceParent {
    // With spans exported, the request's own span (a child of the caller's traceparent, see
    // platform::telemetry::TracedRootSpan) is the parent the services continue from.
    if let Some(own) = platform::telemetry::trace_context(&tracing::Span::current()) {
        return TraceParent {
            trace_id: own.trace_id,
            span_id: own.span_id,
            sampled: own.sampled,
        };
    }
    headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<TraceParent>().ok())
        .map_or_else(TraceParent::new_root, |parent| parent.child())
}

/// Which browser origins may call the API.
#[derive(Debug, Clone, Default)]
pub struct CorsPolicy {
    any: bool,
    origins: Vec<String>,
}

const CORS_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
const CORS_HEADERS: &str =
    "authorization, content-type, idempotency-key, traceparent, x-request-id";
const CORS_EXPOSED: &str = "x-request-id, retry-after, location";

impl CorsPolicy {
    pub fn new(origins: &[&str]) -> Self {
        Self {
            any: origins.contains(&"*"),
            origins: origins
                .iter()
                .filter(|origin| **origin != "*")
                .map(|origin| origin.trim_end_matches('/').to_owned())
                .collect(),
        }
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, if it may call. A refused origin
    /// simply gets no CORS headers: the browser then withholds the answer, while same-origin
    /// callers (the storefront) are unaffected.
    fn allow(&self, origin: &str) -> Option<HeaderValue> {
        if self.any {
            Some(HeaderValue::from_static("*"))
        } else if self.origins.iter().any(|allowed| allowed == origin) {
            HeaderValue::from_str(origin).ok()
        } else {
            None
        }
    }
}

/// Middleware: assigns the request id and trace, answers CORS preflights, and stamps the
/// answer with `x-request-id` and, for allowed origins, CORS headers.
pub async fn edge(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let context = RequestContext {
        request_id: request_id_from(request.headers()),
        traceparent: trace_from(request.headers()),
    };
    let request_id = HeaderValue::from_str(&context.request_id).ok();
    let policy = request
        .app_data::<web::Data<CorsPolicy>>()
        .map(|policy| policy.get_ref().clone())
        .unwrap_or_default();
    let allowed_origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|origin| origin.to_str().ok())
        .and_then(|origin| policy.allow(origin));
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    request.extensions_mut().insert(context);

    let mut response = if preflight {
        let mut answer = HttpResponse::NoContent();
        if allowed_origin.is_some() {
            answer
                .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, CORS_METHODS))
                .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, CORS_HEADERS))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"));
        }
        request.into_response(answer.finish()).map_into_right_body()
    } else {
        next.call(request).await?.map_into_left_body()
    };
    let headers = response.headers_mut();
    if let Some(id) = request_id {
        headers.insert(HeaderName::from_static(REQUEST_ID), id);
    }
    if let Some(origin) = allowed_origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(CORS_EXPOSED),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    #[test]
    fn a_plain_request_id_is_kept_and_anything_else_replaced() {
        assert_eq!(
            request_id_from(&headers(&[("x-request-id", "abc-123_x.y")])),
            "abc-123_x.y"
        );
        for bad in ["", "has space", "new\u{7f}line", "ünïcode"] {
            let mut map = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(bad) {
                map.insert(HeaderName::from_static("x-request-id"), value);
            }
            let id = request_id_from(&map);
            assert_ne!(id, bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        }
        let long = "a".repeat(129);
        let mut map = HeaderMap::new();
        map.insert(
            HeaderName::from_static("x-request-id"),
            HeaderValue::from_str(&long).expect("header"),
        );
        assert_ne!(request_id_from(&map), long);
    }

    #[test]
    fn a_valid_traceparent_is_continued_and_garbage_starts_a_new_trace() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = trace_from(&headers(&[("traceparent", incoming)]));
        assert_eq!(trace.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(trace.span_id, 0x00f0_67aa_0ba9_02b7);
        let fresh = trace_from(&headers(&[("traceparent", "nonsense")]));
        assert_ne!(fresh.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn cors_allows_listed_origins_or_any() {
        let policy = CorsPolicy::new(&["https://shop.example", "http://localhost:5173/"]);
        assert!(policy.allow("https://shop.example").is_some());
        assert!(policy.allow("http://localhost:5173").is_some());
        assert!(policy.allow("https://evil.example").is_none());
        assert!(
            CorsPolicy::default()
                .allow("https://shop.example")
                .is_none()
        );
        assert_eq!(
            CorsPolicy::new(&["*"]).allow("https://anyone.example"),
            Some(HeaderValue::from_static("*"))
        );
    }
}
