//! The product service's reactions: none. It consumes no topic; the catalog changes only through
//! its own API (and `seed-demo`), and each change publishes the product's ProductSnapshot
//! through the outbox, in the transaction that saves it.

/// Topics the product service consumes: none.
pub const TOPICS: &[&str] = &[];
