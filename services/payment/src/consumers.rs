//! Kafka consumers of the payment service: which events it reacts to. Each handler runs inside the
//! messaging runtime's idempotent consumer, in one database transaction with its effects.
