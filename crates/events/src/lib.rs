//! Bazaar's domain events.
//!
//! - Each event type has an Avro schema in `schemas/avro/<topic>/<Event>/vN.avsc` (every
//!   version kept, so a test can prove each change BACKWARD compatible) and a Rust struct here.
//! - A topic carries several event types, so its value schema (subject `<topic>-value`) is the
//!   union of the latest schema of each; [`codec`] encodes and decodes through that union.
//! - Metadata (event id, type, times, correlation, causation, trace) travels in Kafka headers,
//!   see [`metadata`]; the Kafka key is the aggregate id ([`Event::key`]).

pub mod codec;
pub mod metadata;
pub mod pii;
pub mod types;
pub mod wire;

pub use codec::{CodecError, TopicSchema, decode, encode, topic_schema};
pub use metadata::{EventMetadata, TraceParent};
pub use types::*;
