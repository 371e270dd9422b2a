//! Bazaar payment service. Charges and refunds through a payment gateway; keeps transaction records.

pub mod config;
pub mod consumers;
pub mod db;
pub mod http;
pub mod provider;
pub mod startup;
