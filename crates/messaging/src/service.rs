//! The shape of a service that publishes events: the platform application plus the runtime's
//! tables, a Kafka readiness check and the outbox relay; and of one that consumes them.

use platform::app::{Application, ApplicationBuilder};
use platform::config::ServiceSettings;

use crate::consumer::{ConsumerSettings, EventHandler, IdempotentConsumer};
use crate::relay::{Relay, RelaySettings};

/// Starts a service: `configure` adds its migrations and routes; the messaging runtime adds
/// its own tables, the Kafka readiness check and the relay. Its consumer is added with
/// [`consume`].
pub async fn start(
    name: &'static str,
    settings: ServiceSettings,
    configure: impl FnOnce(ApplicationBuilder) -> ApplicationBuilder,
) -> anyhow::Result<Application> {
    let kafka = settings.kafka.clone();
    let builder = Application::builder(name, settings)
        .shared_migrations(crate::migrations::migrator())
        .readiness(crate::client::kafka_readiness(kafka.clone()));
    let mut app = configure(builder).start().await?;
    let relay = Relay::new(name, app.pool().clone(), kafka, RelaySettings::default())?;
    app.spawn_worker(|shutdown| relay.run(shutdown));
    Ok(app)
}

/// Connects to a service database and applies its migrations and the runtime's, for command
/// line tasks (seeding, admin) that run without the service.
pub async fn connect_and_migrate(
    settings: &platform::config::DatabaseSettings,
    service_migrations: &sqlx::migrate::Migrator,
) -> anyhow::Result<sqlx::PgPool> {
    let pool = platform::db::connect_and_migrate(settings, service_migrations).await?;
    crate::migrations::migrator().run(&pool).await?;
    Ok(pool)
}

/// Runs `handler` as the service's idempotent consumer of `topics`, beside it until shutdown:
/// its consumer group, database and name are the application's.
pub fn consume<H: EventHandler>(app: &mut Application, topics: &[&str], handler: H) {
    let consumer = IdempotentConsumer::new(
        app.name(),
        app.pool().clone(),
        app.settings().kafka.clone(),
        ConsumerSettings::for_topics(topics),
        handler,
    );
    app.spawn_worker(|shutdown| consumer.run(shutdown));
}
