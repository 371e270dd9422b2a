//! Payments: charges, refunds and the rule that an order is charged at most once.
//!
//! Saga rules live here as plain functions from (state, event) to (new state, events to emit),
//! with no Kafka or database, so they can be tested as the business rules they are.
