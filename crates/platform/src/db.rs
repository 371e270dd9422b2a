//! The service's own PostgreSQL database: one pool, migrations applied at start.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::config::DatabaseSettings;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database url: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub fn connect_options(settings: &DatabaseSettings) -> Result<PgConnectOptions, DbError> {
    settings.url().parse().map_err(DbError::InvalidUrl)
}

/// A pooled connection idle at least this long is pinged before it is handed out.
pub const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Options of every pool a service keeps. sqlx pings each connection it hands out by default:
/// a round trip before every transaction, a quarter of all the round trips a checkout made,
/// and each one wakes a PostgreSQL backend and a thread here. Only connections idle for
/// [`PING_IDLE_AFTER`] are pinged: one that was used a moment ago is as alive as a ping would
/// show, and one broken since (the server restarted) fails its statement, which is retried as
/// any transient database error is.
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE_AFTER {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Connects (failing fast if the database is unreachable) and applies pending migrations.
pub async fn connect_and_migrate(
    settings: &DatabaseSettings,
    migrator: &Migrator,
) -> Result<PgPool, DbError> {
    let pool = pool_options()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_with(connect_options(settings)?)
        .await
        .map_err(DbError::Connect)?;
    migrator.run(&pool).await?;
    Ok(pool)
}

/// A LISTEN connection of its own, beside `pool` (same database, same settings) rather than
/// taken from it: a listener keeps its connection for as long as it listens, and three of them
/// (the relay's, the order streams', a worker's) taken from a pool of 8 left checkouts and
/// consumer batches waiting for a connection until they failed, in the chaos suite under load.
pub async fn listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(pool.options().get_acquire_timeout())
        .connect_lazy_with((*pool.connect_options()).clone());
    PgListener::connect_with(&own).await
}
