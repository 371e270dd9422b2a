//! Avro encoding of events through their topic's union schema.

use std::collections::HashMap;
use std::sync::LazyLock;

use apache_avro::Schema;
use apache_avro::types::Value;

use crate::types::{Event, SCHEMAS};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("topic {0:?} carries no Bazaar events")]
    UnknownTopic(String),
    #[error("event type {0:?} is not one this build knows")]
    UnknownEventType(String),
    #[error("the writer schema is not a union of records")]
    NotAUnionOfRecords,
    #[error(
        "personal field {0:?} is neither a string nor an optional string, so it cannot be masked"
    )]
    NotMaskable(String),
    #[error("avro: {0}")]
    Avro(#[from] Box<apache_avro::Error>),
}

impl From<apache_avro::Error> for CodecError {
    fn from(error: apache_avro::Error) -> Self {
        Self::Avro(Box::new(error))
    }
}

/// The value schema of one topic: the union of the record schema of each event type it carries.
#[derive(Debug)]
pub struct TopicSchema {
    pub topic: &'static str,
    /// The union as JSON, as registered under `<topic>-value`.
    pub text: String,
    pub union: Schema,
    /// Event type name and record schema of each union branch, in branch order.
    branches: Vec<(&'static str, Schema)>,
}

impl TopicSchema {
    fn build(topic: &'static str) -> Result<Self, CodecError> {
        let members: Vec<(&'static str, &'static str)> = SCHEMAS
            .iter()
            .filter(|(t, _, _)| *t == topic)
            .map(|(_, name, text)| (*name, *text))
            .collect();
        if members.is_empty() {
            return Err(CodecError::UnknownTopic(topic.to_owned()));
        }
        let text = format!(
            "[{}]",
            members
                .iter()
                .map(|(_, text)| text.trim())
                .collect::<Vec<_>>()
                .join(",")
        );
        let union = Schema::parse_str(&text)?;
        let branches = members
            .iter()
            .map(|(name, text)| Ok((*name, Schema::parse_str(text)?)))
            .collect::<Result<_, CodecError>>()?;
        Ok(Self {
            topic,
            text,
            union,
            branches,
        })
    }

    pub fn event_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.branches.iter().map(|(name, _)| *name)
    }

    fn branch(&self, type_name: &str) -> Option<(usize, &Schema)> {
        self.branches
            .iter()
            .enumerate()
            .find(|(_, (name, _))| *name == type_name)
            .map(|(index, (_, schema))| (index, schema))
    }
}

static TOPIC_SCHEMAS: LazyLock<HashMap<&'static str, Result<TopicSchema, String>>> =
    LazyLock::new(|| {
        let mut topics: Vec<&'static str> = SCHEMAS.iter().map(|(topic, _, _)| *topic).collect();
        topics.dedup();
        topics
            .into_iter()
            .map(|topic| (topic, TopicSchema::build(topic).map_err(|e| e.to_string())))
            .collect()
    });

/// The union schema of a logical topic (no deployment prefix).
pub fn topic_schema(topic: &str) -> Result<&'static TopicSchema, CodecError> {
    match TOPIC_SCHEMAS.get(topic) {
        Some(Ok(schema)) => Ok(schema),
        // Schemas are compiled in and checked by tests; a broken one is a build defect.
        Some(Err(error)) => Err(CodecError::UnknownTopic(format!("{topic}: {error}"))),
        None => Err(CodecError::UnknownTopic(topic.to_owned())),
    }
}

/// Every logical topic that carries events.
pub fn event_topics() -> Vec<&'static str> {
    let mut topics: Vec<&'static str> = TOPIC_SCHEMAS.keys().copied().collect();
    topics.sort_unstable();
    topics
}

/// The record schema this build reads and writes an event type with (its latest version).
pub fn record_schema(type_name: &str) -> Option<&'static Schema> {
    SCHEMAS
        .iter()
        .find(|(_, name, _)| *name == type_name)
        .and_then(|(topic, _, _)| topic_schema(topic).ok())
        .and_then(|schema| schema.branch(type_name))
        .map(|(_, schema)| schema)
}

/// Encodes an event as an Avro datum of its topic's union schema (without the wire header).
pub fn encode(event: &Event) -> Result<Vec<u8>, CodecError> {
    let schema = topic_schema(event.topic())?;
    let (index, record_schema) = schema
        .branch(event.type_name())
        .ok_or_else(|| CodecError::UnknownEventType(event.type_name().to_owned()))?;
    let record = event.to_record()?.resolve(record_schema)?;
    let branch = u32::try_from(index).map_err(|_| CodecError::NotAUnionOfRecords)?;
    Ok(
        apache_avro::writer::datum::GenericDatumWriter::builder(&schema.union)
            .build()?
            .write_value_to_vec(Value::Union(branch, Box::new(record)))?,
    )
}

/// Decodes a datum written with `writer` (a union of event records, possibly an older or newer
/// version than ours) into an event. The branch is chosen by the writer's record name, never
/// by shape, so two records with similar fields cannot be confused.
pub fn decode(writer: &Schema, mut datum: &[u8]) -> Result<Event, CodecError> {
    let Schema::Union(writer_union) = writer else {
        return Err(CodecError::NotAUnionOfRecords);
    };
    let value = apache_avro::reader::datum::GenericDatumReader::builder(writer)
        .build()?
        .read_value(&mut datum)?;
    let Value::Union(branch, record) = value else {
        return Err(CodecError::NotAUnionOfRecords);
    };
    let type_name = usize::try_from(branch)
        .ok()
        .and_then(|index| writer_union.variants().get(index))
        .and_then(|variant| match variant {
            Schema::Record(record) => Some(record.name.name().to_owned()),
            _ => None,
        })
        .ok_or(CodecError::NotAUnionOfRecords)?;
    let reader =
        record_schema(&type_name).ok_or_else(|| CodecError::UnknownEventType(type_name.clone()))?;
    let resolved = record.resolve(reader)?;
    Event::from_record(&type_name, &resolved)
        .ok_or(CodecError::UnknownEventType(type_name))?
        .map_err(CodecError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::*;

    fn samples() -> Vec<Event> {
        vec![
            UserRegistered {
                user_id: "u1".into(),
                email: "a@example.com".into(),
                display_name: "Ann".into(),
                registered_at: 1_764_000_000_000,
            }
            .into(),
            ProductSnapshot {
                product_id: "p1".into(),
                slug: "tee".into(),
                name: "Tee".into(),
                description: String::new(),
                archived: false,
                variants: vec![VariantSnapshot {
                    sku: "TEE-M".into(),
                    name: "M".into(),
                    attributes: [("size".to_owned(), "M".to_owned())].into(),
                    price_minor: 1999,
                    currency: "EUR".into(),
                }],
            }
            .into(),
            OrderCreated {
                order_id: "o1".into(),
                user_id: "u1".into(),
                lines: vec![OrderLine {
                    sku: "TEE-M".into(),
                    quantity: 2,
                    unit_price_minor: 1999,
                }],
                total_minor: 3998,
                currency: "EUR".into(),
                payment_token: "tok_visa".into(),
                shipping_address: "1 Main St".into(),
                address: None,
            }
            .into(),
            OrderPaid {
                order_id: "o1".into(),
            }
            .into(),
            OrderRejected {
                order_id: "o1".into(),
                reason: "out_of_stock".into(),
                sku: Some("TEE-M".into()),
            }
            .into(),
            OrderCancelled {
                order_id: "o1".into(),
                reason: "timeout".into(),
            }
            .into(),
            StockReserved {
                order_id: "o1".into(),
                lines: vec![ReservedLine {
                    sku: "TEE-M".into(),
                    quantity: 2,
                }],
                expires_at: 1_764_000_900_000,
            }
            .into(),
            StockReservationFailed {
                order_id: "o1".into(),
                sku: "TEE-M".into(),
                requested: 2,
                available: 1,
            }
            .into(),
            StockCommitted {
                order_id: "o1".into(),
            }
            .into(),
            StockReleased {
                order_id: "o1".into(),
                reason: "order_cancelled".into(),
            }
            .into(),
            ReservationExpired {
                order_id: "o1".into(),
            }
            .into(),
            StockLevelChanged {
                sku: "TEE-M".into(),
                on_hand: 5,
                reserved: 2,
            }
            .into(),
            PaymentSucceeded {
                order_id: "o1".into(),
                payment_id: "pi_1".into(),
                amount_minor: 3998,
                currency: "EUR".into(),
            }
            .into(),
            PaymentFailed {
                order_id: "o1".into(),
                reason: "card_declined".into(),
            }
            .into(),
            PaymentRefunded {
                order_id: "o1".into(),
                payment_id: "pi_1".into(),
                amount_minor: 3998,
                currency: "EUR".into(),
            }
            .into(),
            ShipmentScheduled {
                order_id: "o1".into(),
                shipment_id: "s1".into(),
                carrier: "DHL".into(),
                tracking_number: "TRK1".into(),
                pickup_date: "2026-11-30".into(),
            }
            .into(),
            ShipmentDispatched {
                order_id: "o1".into(),
                shipment_id: "s1".into(),
            }
            .into(),
            ShipmentDelivered {
                order_id: "o1".into(),
                shipment_id: "s1".into(),
            }
            .into(),
        ]
    }

    #[test]
    fn event_types_name_the_catalog_and_read_back() {
        let names: Vec<&str> = SCHEMAS.iter().map(|(_, name, _)| *name).collect();
        let types: Vec<&str> = EventType::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(types, names);
        for event in samples() {
            let kind = event.event_type();
            assert_eq!(kind.name().parse::<EventType>(), Ok(kind));
            assert_eq!(kind.topic(), event.topic());
        }
        assert!("Nope".parse::<EventType>().is_err());
    }

    #[test]
    fn every_event_type_has_a_sample() {
        let sampled: Vec<&str> = samples().iter().map(Event::type_name).collect();
        for (_, name, _) in SCHEMAS {
            assert!(sampled.contains(name), "no sample for {name}");
        }
    }

    #[test]
    fn every_event_round_trips_through_its_topic_union() {
        for event in samples() {
            let schema = topic_schema(event.topic()).expect("topic schema");
            let datum = encode(&event).unwrap_or_else(|e| panic!("{}: {e}", event.type_name()));
            let decoded = decode(&schema.union, &datum).expect("decode");
            assert_eq!(decoded, event);
        }
    }

    #[test]
    fn records_with_the_same_shape_are_told_apart_by_name() {
        // OrderPaid and the order-id-only inventory events share a shape.
        let paid: Event = OrderPaid {
            order_id: "o9".into(),
        }
        .into();
        let datum = encode(&paid).expect("encode");
        let schema = topic_schema("order-events").expect("schema");
        assert_eq!(
            decode(&schema.union, &datum).expect("decode").type_name(),
            "OrderPaid"
        );
    }

    fn write(writer: &Schema, record: Value) -> Vec<u8> {
        apache_avro::writer::datum::GenericDatumWriter::builder(writer)
            .build()
            .expect("writer")
            .write_value_to_vec(Value::Union(0, Box::new(record)))
            .expect("encode")
    }

    #[test]
    fn a_newer_writer_with_an_extra_field_is_read_by_this_reader() {
        let newer = r#"[{"type":"record","name":"OrderPaid","namespace":"com.bazaar.order",
            "fields":[{"name":"order_id","type":"string"},{"name":"paid_by","type":"string","default":"card"}]}]"#;
        let writer = Schema::parse_str(newer).expect("schema");
        let record = Value::Record(vec![
            ("order_id".into(), Value::String("o7".into())),
            ("paid_by".into(), Value::String("card".into())),
        ]);
        let datum = write(&writer, record);
        let event = decode(&writer, &datum).expect("decode");
        assert_eq!(
            event,
            OrderPaid {
                order_id: "o7".into()
            }
            .into()
        );
    }

    #[test]
    fn an_event_type_this_build_does_not_know_is_reported_by_name() {
        let foreign = r#"[{"type":"record","name":"OrderGiftWrapped","namespace":"com.bazaar.order",
            "fields":[{"name":"order_id","type":"string"}]}]"#;
        let writer = Schema::parse_str(foreign).expect("schema");
        let record = Value::Record(vec![("order_id".into(), Value::String("o1".into()))]);
        let datum = write(&writer, record);
        let error = decode(&writer, &datum).expect_err("unknown type");
        assert!(error.to_string().contains("OrderGiftWrapped"), "{error}");
    }

    #[test]
    fn record_names_are_unique_across_topics() {
        let mut names: Vec<&str> = SCHEMAS.iter().map(|(_, name, _)| *name).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
    }

    #[test]
    fn event_topics_match_the_kafka_topic_catalog() {
        let catalog = include_str!("../../../infra/kafka/topics.toml");
        for topic in event_topics() {
            assert!(
                catalog.contains(&format!("name = \"{topic}\"")),
                "{topic} is not declared in infra/kafka/topics.toml"
            );
        }
    }
}
