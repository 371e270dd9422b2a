use actix_web::web;
use platform::app::Application;

use crate::config::{Config, SERVICE};
use crate::consumers::{ShippingHandler, TOPICS};

/// Migrates the database, serves HTTP, and runs the relay and the order consumer. Port 0 picks
/// a free port (tests).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let verifier = web::Data::new(auth_kit::JwtVerifier::new(config.auth.clone()));
    let handler = ShippingHandler {
        home_country: config.shipping.home_country.clone(),
    };
    let mut app = messaging::service::start(SERVICE, config.service, move |app| {
        app.migrations(&crate::db::MIGRATOR).routes(move |routes| {
            routes.app_data(verifier.clone());
            crate::http::routes(routes);
        })
    })
    .await?;
    messaging::service::consume(&mut app, TOPICS, handler);
    Ok(app)
}
