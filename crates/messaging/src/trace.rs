//! The trace context a request brings, so the events it causes continue the caller's trace.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use events::TraceParent;

/// The request's W3C `traceparent`, if it sent a valid one (the gateway always does). Pass it
/// as [`crate::outbox::Cause::Origin`] so the events a request causes join its trace.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestTrace(pub Option<TraceParent>);

impl RequestTrace {
    pub fn of(request: &HttpRequest) -> Self {
        Self(
            request
                .headers()
                .get(events::metadata::headers::TRACEPARENT)
                .and_then(|value| value.to_str().ok())
                .and_then(|text| text.parse().ok()),
        )
    }

    /// The outbox cause of an event this request starts.
    pub fn cause(&self) -> crate::outbox::Cause<'_> {
        crate::outbox::Cause::Origin(self.0.as_ref())
    }
}

impl FromRequest for RequestTrace {
    type Error = std::convert::Infallible;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Self::of(request)))
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn a_valid_traceparent_is_taken_and_garbage_is_ignored() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let request = TestRequest::default()
            .insert_header(("traceparent", header))
            .to_http_request();
        let trace = RequestTrace::of(&request).0.map(|trace| trace.to_string());
        assert_eq!(trace.as_deref(), Some(header));
        let garbage = TestRequest::default()
            .insert_header(("traceparent", "nonsense"))
            .to_http_request();
        assert!(RequestTrace::of(&garbage).0.is_none());
        assert!(
            RequestTrace::of(&TestRequest::default().to_http_request())
                .0
                .is_none()
        );
    }
}
