use platform::app::Application;

use crate::config::{Config, SERVICE};

/// Connects and migrates the database, then serves HTTP. Port 0 picks a free port (tests).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let kafka = config.service.kafka.clone();
    Application::builder(SERVICE, config.service)
        .migrations(&crate::db::MIGRATOR)
        .readiness(messaging::kafka_readiness(kafka))
        .routes(crate::http::routes)
        .start()
        .await
}
