//! Kafka consumers of the auth service: none. It only publishes (UserRegistered, through the
//! outbox); accounts change only through its own API and command line.
