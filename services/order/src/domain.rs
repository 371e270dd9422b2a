//! Orders and the rules that move their status forward.
//!
//! Saga rules live here as plain functions from (state, event) to (new state, events to emit),
//! with no Kafka or database, so they can be tested as the business rules they are.
