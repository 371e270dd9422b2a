//! Records to events: Confluent framing, the writer schema from the registry, the topic
//! union, and the metadata headers; then one JSON object per record.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use events::{Event, EventMetadata};
use messaging::record::{PayloadError, RecordDecoder};
use messaging::registry::SchemaRegistryClient;
use platform::config::KafkaSettings;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::context::Context;
use crate::exit::Exit;
use crate::kafka::Record;

#[derive(Debug, Clone)]
pub struct Decoder {
    records: RecordDecoder,
    personal_data: PersonalData,
}

/// Whether the personal fields of events (`"bazaar.pii": true` in their schemas) are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PersonalData {
    /// Each replaced by `***`, and no raw payload printed: what people see by default.
    #[default]
    Masked,
    /// As published: `--reveal`, for the ops principal.
    Revealed,
}

/// A record with what could be made of it.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub record: Record,
    pub schema_id: Option<u32>,
    pub event: Result<Event, String>,
    pub metadata: Result<EventMetadata, String>,
    pub personal_data: PersonalData,
}

impl Decoded {
    pub fn event_type(&self) -> Option<&str> {
        match (&self.metadata, &self.event) {
            (Ok(metadata), _) => Some(&metadata.event_type),
            (_, Ok(event)) => Some(event.type_name()),
            _ => self.record.header(events::metadata::headers::EVENT_TYPE),
        }
    }

    pub fn occurred_at(&self) -> Option<DateTime<Utc>> {
        match &self.metadata {
            Ok(metadata) => Some(metadata.occurred_at),
            Err(_) => self.record.timestamp_ms.and_then(millis_to_time),
        }
    }
}

impl Decoder {
    /// Decodes for people to read: personal fields masked unless the context reveals them.
    pub fn new(context: &Context) -> Self {
        Self {
            personal_data: context.personal_data,
            ..Self::unmasked(&context.kafka)
        }
    }

    /// Decodes events as published, personal fields included, for a command that shows no one
    /// the events (a rebuild writes them back into a service's database).
    pub fn unmasked(kafka: &KafkaSettings) -> Self {
        Self {
            records: RecordDecoder::new(SchemaRegistryClient::of(kafka)),
            personal_data: PersonalData::Revealed,
        }
    }

    /// Decodes a record. A message that is not a Bazaar event is reported in the result; only
    /// an unreachable registry is an error, since every later record would fail the same way.
    pub async fn decode(&self, record: Record) -> anyhow::Result<Decoded> {
        let metadata = record.metadata().map_err(|error| error.to_string());
        let payload = self.records.payload(&record).await;
        let event = match payload.event {
            Ok(event) => Ok(event),
            Err(error @ PayloadError::RegistryUnavailable { .. }) => {
                return Err(Exit::Unavailable(error.to_string()).into());
            }
            Err(PayloadError::NotAnEvent(reason)) => Err(reason),
        };
        let event = match (event, self.personal_data) {
            (Ok(event), PersonalData::Masked) => events::pii::mask(&event)
                .map_err(|error| format!("the personal fields cannot be masked: {error}")),
            (event, _) => event,
        };
        Ok(Decoded {
            record,
            schema_id: payload.schema_id,
            event,
            metadata,
            personal_data: self.personal_data,
        })
    }
}

pub fn millis_to_time(millis: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(millis).single()
}

pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The event's own fields, without the enum wrapper serde puts around them.
pub fn event_body(event: &Event) -> Value {
    match serde_json::to_value(event) {
        Ok(Value::Object(mut wrapper)) if wrapper.len() == 1 => wrapper
            .remove(event.type_name())
            .unwrap_or(Value::Object(wrapper)),
        Ok(other) => other,
        Err(error) => json!({ "error": error.to_string() }),
    }
}

/// One record as printed by `tap`: position, key, headers (parsed and raw) and event body, in
/// this order (a struct, since a JSON map would sort the keys).
#[derive(Debug, Serialize)]
pub struct TapLine {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<String>,
    pub key: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub event_id: Option<Uuid>,
    pub occurred_at: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<Uuid>,
    pub trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_error: Option<String>,
    pub schema_id: Option<u32>,
    pub event: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_hex: Option<String>,
    /// Every header as sent (`event-id`, `event-type`, `occurred-at`, `correlation-id`,
    /// `causation-id`, `traceparent`, and `dlq-*` on dead-letter copies).
    pub headers: std::collections::BTreeMap<String, String>,
}

pub fn to_json(decoded: &Decoded, logical_topic: &str) -> TapLine {
    let record = &decoded.record;
    let metadata = decoded.metadata.as_ref().ok();
    TapLine {
        topic: logical_topic.to_owned(),
        partition: record.partition,
        offset: record.offset,
        timestamp: record.timestamp_ms.and_then(millis_to_time).map(rfc3339),
        key: record.key.clone(),
        event_type: decoded.event_type().map(str::to_owned),
        event_id: metadata.map(|m| m.event_id),
        occurred_at: metadata.map(|m| rfc3339(m.occurred_at)),
        correlation_id: metadata.map(|m| m.correlation_id.clone()),
        causation_id: metadata.and_then(|m| m.causation_id),
        trace_id: metadata.map(|m| m.traceparent.trace_id_hex()),
        metadata_error: decoded.metadata.as_ref().err().cloned(),
        schema_id: decoded.schema_id,
        event: decoded.event.as_ref().ok().map(event_body),
        decode_error: decoded.event.as_ref().err().cloned(),
        // Raw bytes are shown only where personal data may be: they would carry it unmasked.
        payload_hex: match (&decoded.event, &record.payload, decoded.personal_data) {
            (Err(_), Some(payload), PersonalData::Revealed) => Some(hex(payload)),
            _ => None,
        },
        headers: record.headers.iter().cloned().collect(),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .take(4096)
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}

/// A one-line description of an event for tables.
pub fn summary(event: &Event) -> String {
    let money = |minor: i64, currency: &str| {
        format!("{}.{:02} {currency}", minor / 100, (minor % 100).abs())
    };
    match event {
        Event::UserRegistered(e) => format!("{} <{}>", e.display_name, e.email),
        Event::ProductSnapshot(e) => format!(
            "{} ({} variant(s){})",
            e.name,
            e.variants.len(),
            if e.archived { ", archived" } else { "" }
        ),
        Event::OrderCreated(e) => format!(
            "{} line(s), {}",
            e.lines.len(),
            money(e.total_minor, &e.currency)
        ),
        Event::OrderPaid(_) | Event::StockCommitted(_) | Event::ReservationExpired(_) => {
            String::new()
        }
        Event::OrderRejected(e) => match &e.sku {
            Some(sku) => format!("{} ({sku})", e.reason),
            None => e.reason.clone(),
        },
        Event::OrderCancelled(e) => e.reason.clone(),
        Event::StockReserved(e) => format!(
            "{} line(s), expires {}",
            e.lines.len(),
            millis_to_time(e.expires_at).map_or_else(|| e.expires_at.to_string(), rfc3339)
        ),
        Event::StockReservationFailed(e) => format!(
            "{}: requested {}, available {}",
            e.sku, e.requested, e.available
        ),
        Event::StockReleased(e) => e.reason.clone(),
        Event::StockLevelChanged(e) => {
            format!("{}: on hand {}, reserved {}", e.sku, e.on_hand, e.reserved)
        }
        Event::PaymentSucceeded(e) => {
            format!("{} ({})", money(e.amount_minor, &e.currency), e.payment_id)
        }
        Event::PaymentFailed(e) => e.reason.clone(),
        Event::PaymentRefunded(e) => {
            format!("{} ({})", money(e.amount_minor, &e.currency), e.payment_id)
        }
        Event::ShipmentScheduled(e) => format!(
            "{} {} {}, pickup {}",
            e.shipment_id, e.carrier, e.tracking_number, e.pickup_date
        ),
        Event::ShipmentDispatched(e) => e.shipment_id.clone(),
        Event::ShipmentDelivered(e) => e.shipment_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_event_without_its_enum_wrapper() {
        let event: Event = events::OrderCancelled {
            order_id: "o1".into(),
            reason: "timeout".into(),
        }
        .into();
        assert_eq!(
            event_body(&event),
            json!({"order_id": "o1", "reason": "timeout"})
        );
        assert_eq!(summary(&event), "timeout");
    }
}
