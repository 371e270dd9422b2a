use std::sync::Arc;

use platform::app::Application;

use crate::config::{Config, SERVICE};
use crate::consumers::{PaymentHandler, TOPICS, run_payment_worker};
use crate::provider::ConfiguredProvider;

/// Migrates the database, serves HTTP, and runs the relay, the saga consumer and the payment
/// worker. Port 0 picks a free port (tests).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    // Settings the provider cannot work with stop the service before it starts anything.
    let provider = Arc::new(ConfiguredProvider::new(&config.provider)?);
    tracing::info!(?provider, "payment provider");
    let mut app = messaging::service::start(SERVICE, config.service, |app| {
        app.migrations(&crate::db::MIGRATOR)
            .routes(crate::http::routes)
    })
    .await?;
    messaging::service::consume(&mut app, TOPICS, PaymentHandler);
    let pool = app.pool().clone();
    let workers = config.workers.clone();
    app.spawn_worker(move |shutdown| run_payment_worker(pool, provider, workers, shutdown));
    Ok(app)
}
