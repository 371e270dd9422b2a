use actix_web::web;

/// The shipping service's own routes (health endpoints come from `platform`).
pub fn routes(_config: &mut web::ServiceConfig) {}
