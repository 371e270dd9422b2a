use std::time::Duration;

use actix_web::web;
use platform::app::Application;

use crate::config::{Config, SERVICE};
use crate::consumers::{InventoryHandler, TOPICS, expire_reservations};

/// Migrates the database, serves HTTP, and runs the relay, the saga consumer and the expiry
/// worker. Port 0 picks a free port (tests).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let verifier = web::Data::new(auth_kit::JwtVerifier::new(config.auth.clone()));
    let mut app = messaging::service::start(SERVICE, config.service, move |app| {
        app.migrations(&crate::db::MIGRATOR).routes(move |routes| {
            routes.app_data(verifier.clone());
            crate::http::routes(routes);
        })
    })
    .await?;
    let handler = InventoryHandler {
        reservation_ttl: Duration::from_millis(config.reservations.ttl_ms),
    };
    messaging::service::consume(&mut app, TOPICS, handler);
    let pool = app.pool().clone();
    let interval = Duration::from_millis(config.reservations.expiry_interval_ms);
    app.spawn_worker(move |shutdown| expire_reservations(pool, interval, shutdown));
    Ok(app)
}
