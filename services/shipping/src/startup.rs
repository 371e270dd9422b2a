use actix_web::web;
use messaging::IdempotentConsumer;
use messaging::consumer::ConsumerSettings;
use platform::app::Application;

use crate::config::{Config, SERVICE};
use crate::consumers::{ShippingHandler, TOPICS};

/// Migrates the database, serves HTTP, and runs the relay and the order consumer. Port 0 picks
/// a free port (tests).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let verifier = web::Data::new(auth_kit::JwtVerifier::new(config.auth.clone()));
    let kafka = config.service.kafka.clone();
    let mut app = messaging::service::start(SERVICE, config.service, move |app| {
        app.migrations(&crate::db::MIGRATOR).routes(move |routes| {
            routes.app_data(verifier.clone());
            crate::http::routes(routes);
        })
    })
    .await?;
    let consumer = IdempotentConsumer::new(
        SERVICE,
        app.pool().clone(),
        kafka,
        ConsumerSettings::for_topics(TOPICS),
        ShippingHandler,
    );
    app.spawn_worker(|shutdown| consumer.run(shutdown));
    Ok(app)
}
