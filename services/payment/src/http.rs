use actix_web::web;

/// The payment service's own routes (health endpoints come from `platform`).
pub fn routes(_config: &mut web::ServiceConfig) {}
