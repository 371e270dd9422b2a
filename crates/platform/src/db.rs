//! The service's own PostgreSQL database: one pool, migrations applied at start.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

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

/// Connects (failing fast if the database is unreachable) and applies pending migrations.
pub async fn connect_and_migrate(
    settings: &DatabaseSettings,
    migrator: &Migrator,
) -> Result<PgPool, DbError> {
    let pool = PgPoolOptions::new()
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
