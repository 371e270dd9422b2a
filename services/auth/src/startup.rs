use platform::app::Application;

use crate::config::{Config, SERVICE};

/// Migrates the database, serves HTTP and runs the outbox relay. Port 0 picks a free port (tests).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    messaging::service::start(SERVICE, config.service, |app| {
        app.migrations(&crate::db::MIGRATOR)
            .routes(crate::http::routes)
    })
    .await
}
