//! Bazaar API gateway: the one public entry point. Serves the storefront page and forwards
//! `/api/*` to the services over HTTP with timeouts.

pub mod config;
pub mod proxy;
pub mod startup;
