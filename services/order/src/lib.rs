//! Bazaar order service. Cart, checkout and order status; starts the checkout saga with OrderCreated.
//! Its rules are the `order_rules` crate.

pub mod config;
pub mod consumers;
pub mod db;
pub mod http;
pub mod startup;
