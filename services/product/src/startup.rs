use actix_web::web;
use platform::app::Application;

use crate::config::{Config, SERVICE};
use crate::consumers::{StockLevelHandler, TOPICS};

/// Migrates the database, serves HTTP, and runs the outbox relay and the stock-levels consumer.
/// Port 0 picks a free port (tests).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let verifier = web::Data::new(auth_kit::JwtVerifier::new(config.auth.clone()));
    let stock = web::Data::new(config.stock.clone());
    let mut app = messaging::service::start(SERVICE, config.service, move |app| {
        app.migrations(&crate::db::MIGRATOR).routes(move |routes| {
            routes.app_data(verifier.clone()).app_data(stock.clone());
            crate::http::routes(routes);
        })
    })
    .await?;
    messaging::service::consume(&mut app, TOPICS, StockLevelHandler);
    Ok(app)
}
