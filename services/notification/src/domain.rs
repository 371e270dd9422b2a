//! Notifications: which order events a customer hears about, and how.
//!
//! Saga rules live here as plain functions from (state, event) to (new state, events to emit),
//! with no Kafka or database, so they can be tested as the business rules they are.
