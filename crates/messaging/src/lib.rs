//! The messaging runtime every Bazaar service uses, written once:
//!
//! - [`client`]: librdkafka settings; [`topics`]: the topic catalog and its idempotent apply.
//! - [`outbox`]: events written in the caller's transaction; [`relay`]: publishes them.
//! - [`record`]: a Kafka message detached from its client, and the one path to its event.
//! - [`consumer`]: the idempotent consumer (batches per partition, inbox, retries, offsets
//!   stored after commit).
//! - [`dead_letter`]: poison messages, parked keys and redrive.
//! - [`registry`]: the schema registry client.
//! - [`fault`]: opt-in crash points for fault-injection tests.
//! - [`trace`]: the trace context of a request, for the events it causes.
//! - [`tuning`]: librdkafka properties from the environment.
//! - [`worker`]: background work taken from the database in rounds (deadlines, expiries, due
//!   payments and e-mails).

pub mod client;
pub mod consumer;
pub mod dead_letter;
pub mod fault;
pub mod migrations;
pub mod outbox;
pub mod producer;
pub mod record;
pub mod registry;
pub mod relay;
pub mod service;
pub mod topics;
pub mod trace;
pub mod tuning;
pub mod worker;

pub use client::{KafkaError, kafka_readiness};
pub use consumer::{
    ConsumerSettings, EventHandler, HandlerError, IdempotentConsumer, ReceivedEvent,
};
pub use relay::{Relay, RelaySettings};
pub use topics::{ApplyReport, TopicCatalog, TopicSpec};
