//! What travels beside an event in Kafka headers.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Kafka header names.
pub mod headers {
    pub const EVENT_ID: &str = "event-id";
    pub const EVENT_TYPE: &str = "event-type";
    pub const OCCURRED_AT: &str = "occurred-at";
    pub const CORRELATION_ID: &str = "correlation-id";
    pub const CAUSATION_ID: &str = "causation-id";
    pub const TRACEPARENT: &str = "traceparent";
}

/// Identity and lineage of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// UUID v7: unique, and sortable by creation time.
    pub event_id: Uuid,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    /// Ties together every event of one business flow; the order id for the checkout saga.
    pub correlation_id: String,
    /// The event whose handling produced this one; none for events caused by a request.
    pub causation_id: Option<Uuid>,
    /// W3C trace context of the span that produced the event.
    pub traceparent: TraceParent,
}

impl EventMetadata {
    /// Metadata for an event that starts a flow (caused by a request, not by another event).
    pub fn originating(
        event_type: &str,
        correlation_id: impl Into<String>,
        trace: Option<&TraceParent>,
    ) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            occurred_at: now_micros(),
            correlation_id: correlation_id.into(),
            causation_id: None,
            traceparent: trace.map_or_else(TraceParent::new_root, TraceParent::child),
        }
    }

    /// Metadata for an event emitted while handling `cause`: same correlation and trace.
    pub fn caused_by(event_type: &str, cause: &EventMetadata) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            occurred_at: now_micros(),
            correlation_id: cause.correlation_id.clone(),
            causation_id: Some(cause.event_id),
            traceparent: cause.traceparent.child(),
        }
    }

    /// The headers to send, as (name, value) pairs.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (headers::EVENT_ID, self.event_id.to_string()),
            (headers::EVENT_TYPE, self.event_type.clone()),
            (
                headers::OCCURRED_AT,
                self.occurred_at
                    .to_rfc3339_opts(SecondsFormat::Micros, true),
            ),
            (headers::CORRELATION_ID, self.correlation_id.clone()),
            (headers::TRACEPARENT, self.traceparent.to_string()),
        ];
        if let Some(cause) = self.causation_id {
            pairs.push((headers::CAUSATION_ID, cause.to_string()));
        }
        pairs
    }

    /// Reads metadata from received headers; `lookup` returns a header's value by name.
    pub fn from_headers<'a>(
        lookup: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Self, MetadataError> {
        let required = |name: &'static str| lookup(name).ok_or(MetadataError::Missing(name));
        let parse_uuid = |name: &'static str, text: &str| {
            Uuid::parse_str(text).map_err(|_| MetadataError::Invalid(name, text.to_owned()))
        };
        let event_id = parse_uuid(headers::EVENT_ID, required(headers::EVENT_ID)?)?;
        let occurred_text = required(headers::OCCURRED_AT)?;
        let occurred_at = DateTime::parse_from_rfc3339(occurred_text)
            .map_err(|_| MetadataError::Invalid(headers::OCCURRED_AT, occurred_text.to_owned()))?
            .with_timezone(&Utc);
        let causation_id = lookup(headers::CAUSATION_ID)
            .map(|text| parse_uuid(headers::CAUSATION_ID, text))
            .transpose()?;
        // A missing or malformed trace context starts a new trace rather than losing the event.
        let traceparent = lookup(headers::TRACEPARENT)
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(TraceParent::new_root);
        Ok(Self {
            event_id,
            event_type: required(headers::EVENT_TYPE)?.to_owned(),
            occurred_at,
            correlation_id: required(headers::CORRELATION_ID)?.to_owned(),
            causation_id,
            traceparent,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("header {0} is missing")]
    Missing(&'static str),
    #[error("header {0} has an invalid value {1:?}")]
    Invalid(&'static str, String),
}

/// A W3C `traceparent`: `00-<trace id>-<parent span id>-<flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl TraceParent {
    pub fn new_root() -> Self {
        Self {
            trace_id: Uuid::new_v4().as_u128(),
            span_id: random_span_id(),
            sampled: true,
        }
    }

    /// A new span in the same trace, whose parent is this one.
    pub fn child(&self) -> Self {
        Self {
            span_id: random_span_id(),
            ..*self
        }
    }

    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

/// Microsecond precision: what headers and PostgreSQL keep, so a round trip is lossless.
fn now_micros() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn random_span_id() -> u64 {
    // Never zero: the W3C spec treats an all-zero span id as invalid.
    let bits = Uuid::new_v4().as_u64_pair().0;
    if bits == 0 { 1 } else { bits }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

impl FromStr for TraceParent {
    type Err = MetadataError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || MetadataError::Invalid(headers::TRACEPARENT, text.to_owned());
        let parts: Vec<&str> = text.trim().split('-').collect();
        let [version, trace, span, flags] = parts.as_slice() else {
            return Err(invalid());
        };
        if *version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return Err(invalid());
        }
        let trace_id = u128::from_str_radix(trace, 16).map_err(|_| invalid())?;
        let span_id = u64::from_str_radix(span, 16).map_err(|_| invalid())?;
        let flags = u8::from_str_radix(flags, 16).map_err(|_| invalid())?;
        if trace_id == 0 || span_id == 0 {
            return Err(invalid());
        }
        Ok(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }
}

impl TryFrom<String> for TraceParent {
    type Error = MetadataError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<TraceParent> for String {
    fn from(trace: TraceParent) -> Self {
        trace.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed: TraceParent = text.parse().expect("valid traceparent");
        assert_eq!(parsed.to_string(), text);
        assert!(parsed.sampled);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(
                bad.parse::<TraceParent>().is_err(),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn a_caused_event_continues_the_flow_and_the_trace() {
        let cause = EventMetadata::originating("OrderCreated", "order-1", None);
        let effect = EventMetadata::caused_by("StockReserved", &cause);
        assert_eq!(effect.correlation_id, "order-1");
        assert_eq!(effect.causation_id, Some(cause.event_id));
        assert_eq!(effect.traceparent.trace_id, cause.traceparent.trace_id);
        assert_ne!(effect.traceparent.span_id, cause.traceparent.span_id);
        assert_ne!(effect.event_id, cause.event_id);
    }

    #[test]
    fn metadata_round_trips_through_headers() {
        let cause = EventMetadata::originating("OrderCreated", "order-1", None);
        let metadata = EventMetadata::caused_by("StockReserved", &cause);
        let headers: HashMap<&str, String> = metadata.to_headers().into_iter().collect();
        let parsed = EventMetadata::from_headers(|name| headers.get(name).map(String::as_str))
            .expect("parse");
        assert_eq!(parsed, metadata);
    }

    #[test]
    fn a_missing_event_id_is_an_error_naming_the_header() {
        let error = EventMetadata::from_headers(|_| None).expect_err("missing headers");
        assert_eq!(error, MetadataError::Missing(headers::EVENT_ID));
    }
}
