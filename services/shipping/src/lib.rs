//! Bazaar shipping service. Schedules shipments for paid orders.

pub mod config;
pub mod consumers;
pub mod db;
pub mod http;
pub mod startup;
