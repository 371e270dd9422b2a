use platform::app::Application;

use crate::config::{Config, SERVICE};

/// Connects and migrates the database, then serves HTTP. Port 0 picks a free port (tests).
///
/// No Kafka readiness check: unlike Confluent's registry, this one stores everything in its own
/// database, so a broker outage must not take schema lookups (and every serializer) down with it.
pub async fn build(config: Config) -> anyhow::Result<Application> {
    Application::builder(SERVICE, config.service)
        .migrations(&crate::db::MIGRATOR)
        .routes(crate::http::routes)
        .start()
        .await
}
