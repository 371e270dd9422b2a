//! One Kafka message detached from its client, and the one path that turns it into an event.
//! The consumer, dead-letter redrive and the `bazaar` CLI all read messages through here, so a
//! message means the same thing to each of them.

use std::sync::Arc;

use apache_avro::Schema;
use events::{Event, EventMetadata};
use rdkafka::message::{Headers, Message};

use crate::registry::{RegistryError, SchemaRegistryClient};

/// A message's position, key, bytes and headers, owned, so it can be retried, parked, printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The full topic name, deployment prefix included.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The broker's or producer's timestamp, when the message carries one.
    pub timestamp_ms: Option<i64>,
    pub key: Option<String>,
    pub payload: Option<Vec<u8>>,
    /// In the order they were sent; values that are not UTF-8 are read lossily.
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn from_kafka<M: Message>(message: &M) -> Self {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| {
                        let value = header
                            .value
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default();
                        (header.key.to_owned(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message
                .key()
                .map(|key| String::from_utf8_lossy(key).into_owned()),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The metadata headers of a Bazaar event.
    pub fn metadata(&self) -> Result<EventMetadata, events::metadata::MetadataError> {
        EventMetadata::from_headers(|name| self.header(name))
    }
}

/// Why a payload is not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The registry could not be asked; the same message may decode later.
    #[error("the schema registry at {registry} did not answer: {message}")]
    RegistryUnavailable { registry: String, message: String },
    /// Nothing about this message will ever change: it is not an event of ours.
    #[error("{0}")]
    NotAnEvent(String),
}

impl PayloadError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RegistryUnavailable { .. })
    }
}

/// What a record's payload turned out to be.
#[derive(Debug, Clone)]
pub struct DecodedPayload {
    /// The Confluent schema id, when the payload is framed.
    pub schema_id: Option<u32>,
    pub event: Result<Event, PayloadError>,
}

/// Decodes records: the Confluent frame, the writer schema from the registry (cached for the
/// life of the process), then the topic union.
#[derive(Debug, Clone)]
pub struct RecordDecoder {
    registry: SchemaRegistryClient,
}

impl RecordDecoder {
    pub fn new(registry: SchemaRegistryClient) -> Self {
        Self { registry }
    }

    pub fn registry_url(&self) -> &str {
        self.registry.base_url()
    }

    /// The event in `record`'s payload.
    pub async fn payload(&self, record: &Record) -> DecodedPayload {
        let Some(payload) = record.payload.as_deref() else {
            return DecodedPayload {
                schema_id: None,
                event: Err(PayloadError::NotAnEvent(
                    "no payload (a tombstone)".to_owned(),
                )),
            };
        };
        let (schema_id, datum) = match events::wire::unframe(payload) {
            Ok(framed) => framed,
            Err(error) => {
                return DecodedPayload {
                    schema_id: None,
                    event: Err(PayloadError::NotAnEvent(format!(
                        "not the Confluent wire format: {error}"
                    ))),
                };
            }
        };
        let event = match self.writer_schema(schema_id).await {
            Ok(writer) => events::decode(&writer, datum)
                .map_err(|error| PayloadError::NotAnEvent(format!("cannot decode: {error}"))),
            Err(error) => Err(error),
        };
        DecodedPayload {
            schema_id: Some(schema_id),
            event,
        }
    }

    async fn writer_schema(&self, id: u32) -> Result<Arc<Schema>, PayloadError> {
        self.registry.schema(id).await.map_err(|error| match error {
            RegistryError::Unavailable(message) => PayloadError::RegistryUnavailable {
                registry: self.registry.base_url().to_owned(),
                message,
            },
            other => PayloadError::NotAnEvent(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: Option<Vec<u8>>) -> Record {
        Record {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            timestamp_ms: None,
            key: Some("k".into()),
            payload,
            headers: vec![("event-type".into(), "OrderPaid".into())],
        }
    }

    #[tokio::test]
    async fn a_tombstone_and_an_unframed_payload_are_not_events_and_need_no_registry() {
        // Nothing listens on port 9: asking the registry would make these transient.
        let decoder = RecordDecoder::new(SchemaRegistryClient::new("http://127.0.0.1:9"));
        let tombstone = decoder.payload(&record(None)).await;
        assert!(matches!(tombstone.event, Err(PayloadError::NotAnEvent(_))));
        assert_eq!(tombstone.schema_id, None);
        let garbage = decoder.payload(&record(Some(b"hello".to_vec()))).await;
        assert!(matches!(garbage.event, Err(PayloadError::NotAnEvent(_))));
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_transient() {
        let decoder = RecordDecoder::new(SchemaRegistryClient::new("http://127.0.0.1:9"));
        let framed = events::wire::frame(1, b"\x00");
        let decoded = decoder.payload(&record(Some(framed))).await;
        assert_eq!(decoded.schema_id, Some(1));
        assert!(decoded.event.is_err_and(|error| error.is_transient()));
    }

    #[test]
    fn headers_are_found_by_name() {
        assert_eq!(record(None).header("event-type"), Some("OrderPaid"));
        assert_eq!(record(None).header("missing"), None);
    }
}
