//! Bazaar schema registry. Speaks the part of Confluent's Schema Registry REST API that Avro
//! serializers and deserializers use (Java, librdkafka's libserdes, confluent-kafka-python), and
//! keeps subjects, versions and compatibility settings in its own PostgreSQL database.

pub mod access;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod startup;
