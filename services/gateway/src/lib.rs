//! Bazaar API gateway: the one public entry point. Serves the storefront page, the OpenAPI
//! document and Swagger UI, and forwards `/api/*` to the services over HTTP with timeouts,
//! after checking the caller's access token.

pub mod api;
pub mod balance;
pub mod config;
pub mod edge;
pub mod http;
pub mod proxy;
pub mod routes;
pub mod startup;
pub mod storefront;
