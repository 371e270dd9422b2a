use std::time::Duration;

use actix_web::web;
use platform::app::Application;
use platform::fanout::NotifyFanout;

use crate::config::{Config, SERVICE};
use crate::consumers::{OrderHandler, TOPICS, enforce_deadlines, report_past_deadline};

/// Migrates the database, serves HTTP, and runs the relay, the saga consumer, the status feed
/// of open order streams, the deadline worker and the past-deadline gauge. Port 0 picks a free port (tests).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let verifier = web::Data::new(auth_kit::JwtVerifier::new(config.auth.clone()));
    let checkout = web::Data::new(config.checkout.clone());
    let status_feed = NotifyFanout::new(crate::db::STATUS_CHANNEL);
    let streams = web::Data::new(status_feed.clone());
    let open_streams = web::Data::new(crate::http::OpenStreams::new(&config.streams));
    let mut app = messaging::service::start(SERVICE, config.service, move |app| {
        app.migrations(&crate::db::MIGRATOR).routes(move |routes| {
            routes
                .app_data(verifier.clone())
                .app_data(checkout.clone())
                .app_data(streams.clone())
                .app_data(open_streams.clone());
            crate::http::routes(routes);
        })
    })
    .await?;
    messaging::service::consume(&mut app, TOPICS, OrderHandler);
    let pool = app.pool().clone();
    app.spawn_worker(move |shutdown| status_feed.run(pool, shutdown));
    let pool = app.pool().clone();
    let interval = Duration::from_millis(config.checkout.deadline_interval_ms);
    app.spawn_worker(move |shutdown| enforce_deadlines(pool, interval, shutdown));
    let pool = app.pool().clone();
    app.spawn_worker(move |shutdown| report_past_deadline(pool, Duration::from_secs(15), shutdown));
    Ok(app)
}
