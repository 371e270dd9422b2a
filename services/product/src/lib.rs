//! Bazaar product service. The catalog: products, variants and prices; publishes ProductSnapshot.

pub mod config;
pub mod consumers;
pub mod db;
pub mod domain;
pub mod http;
pub mod seed;
pub mod startup;
