//! Bazaar order service. Cart, checkout and order status; starts the checkout saga with OrderCreated.

pub mod config;
pub mod consumers;
pub mod db;
pub mod domain;
pub mod http;
pub mod startup;
