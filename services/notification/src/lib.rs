//! Bazaar notification service. E-mail and a per-user feed, driven by order lifecycle events.

pub mod config;
pub mod consumers;
pub mod db;
pub mod http;
pub mod mail;
pub mod startup;
