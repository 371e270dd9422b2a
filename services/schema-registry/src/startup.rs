use platform::app::Application;

use crate::access::Writers;
use crate::config::{Config, SERVICE};

/// Connects and migrates the database, then serves HTTP. Port 0 picks a free port (tests).
///
/// No Kafka readiness check: unlike Confluent's registry, this one stores everything in its own
/// database, so a broker outage must not take schema lookups (and every serializer) down with it.
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let writers = Writers::parse(&config.auth)?;
    if config.auth.admits_the_local_default() {
        tracing::warn!(
            "auth.writers admits the local default credentials that every checkout knows: set \
             BAZAAR__AUTH__WRITERS anywhere but on a development machine"
        );
    }
    tracing::info!(writers = ?writers.users().collect::<Vec<_>>(), "registry writers");
    Application::builder(SERVICE, config.service)
        .migrations(&crate::db::MIGRATOR)
        .routes(crate::http::routes(writers))
        .start()
        .await
}
