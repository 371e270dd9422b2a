//! Bazaar inventory service. Stock per SKU and the reservations that prevent overselling.

pub mod config;
pub mod consumers;
pub mod db;
pub mod http;
pub mod seed;
pub mod startup;
