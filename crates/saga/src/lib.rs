//! The checkout saga as a whole, assembled from each service's rules crate.
//!
//! - [`choreography`]: who publishes each event type and which services consume which topics
//!   (from the rules crates' declarations), the topics keyed by order, and [`progress`]: where an
//!   order's saga stands given the event types seen for it (`bazaar timeline`, `bazaar stuck`).
//! - [`sim`]: every service's rules run together over an in-memory bus, with a scripted world
//!   (stock, cards, faults, a customer's cancel, deadlines, reservation expiry), in
//!   microseconds. Its tests play whole scenarios and random ones (duplicated and delayed
//!   deliveries, every interleaving across keys and topics that Kafka allows), and check every
//!   outcome with the invariant checker's rules and every step with [`progress`].
//!
//! No I/O: Cargo keeps this crate free of database, Kafka, HTTP and async runtime crates.

pub mod choreography;
pub mod sim;

pub use choreography::{
    CONSUMERS, Consumer, Progress, handles, order_topics, producer_of, progress, publisher,
};
