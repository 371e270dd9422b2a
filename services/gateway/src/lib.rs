//! Bazaar API gateway: the one public entry point. Serves the storefront page, the OpenAPI
//! document and Swagger UI, and forwards `/api/*` to the services over HTTP with timeouts,
//! after checking the caller's access token.

pub mod config;
pub mod edge;
pub mod openapi;
pub mod proxy;
pub mod routes;
pub mod startup;
pub mod storefront;
