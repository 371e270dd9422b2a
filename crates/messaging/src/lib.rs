//! Kafka as Bazaar services use it.

pub mod client;
pub mod topics;

pub use client::{KafkaError, kafka_readiness};
pub use topics::{ApplyReport, TopicCatalog, TopicSpec};
