use std::time::Duration;

use actix_web::web;
use auth_kit::JwtVerifier;
use messaging::worker::{PollingWorker, Round};
use platform::app::Application;
use platform::shutdown::CancellationToken;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::{Config, SERVICE};
use crate::http::AuthState;
use crate::keys::DatabaseJwks;
use crate::passwords::Passwords;
use crate::sessions::Sessions;

/// How often expired refresh tokens, retired keys and finished login windows are deleted.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(600);
/// Expired refresh tokens are kept this long, so a late reuse is still recognised as reuse.
const EXPIRED_REFRESH_TOKENS_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Migrates the database, makes sure a signing key exists, serves HTTP, and runs the outbox
/// relay and the housekeeping worker. Port 0 picks a free port (tests).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let state = web::Data::new(AuthState {
        sessions: Sessions::new(config.auth.clone(), &config.tokens),
        passwords: Passwords::for_this_machine(),
        login_limit: config.login_limit.clone(),
    });
    // The service checks its own tokens against the keys in its database. The routes exist
    // before the application's pool does, so the key source has a small lazy pool of its own.
    let key_pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(
            config.service.database.acquire_timeout_ms,
        ))
        .connect_lazy_with(platform::db::connect_options(&config.service.database)?);
    let verifier = web::Data::new(
        JwtVerifier::with_source(config.auth.clone(), DatabaseJwks::new(key_pool))
            .with_refetch_interval(Duration::from_secs(1))
            .with_max_age(Duration::from_secs(60)),
    );
    let window = Duration::from_secs(config.login_limit.window_secs);
    let mut app = messaging::service::start(SERVICE, config.service, move |app| {
        app.migrations(&crate::db::MIGRATOR)
            .routes(crate::http::routes(state, verifier))
    })
    .await?;
    crate::keys::active_signing_key(app.pool()).await?;
    let pool = app.pool().clone();
    app.spawn_worker(move |shutdown| housekeeping(pool, window, shutdown));
    Ok(app)
}

async fn housekeeping(
    pool: PgPool,
    login_window: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    PollingWorker::new("auth housekeeping", HOUSEKEEPING_INTERVAL)
        .run(pool.clone(), shutdown, || async {
            sweep(&pool, login_window)
                .await
                .map(|()| Round::Idle)
                .map_err(|error| format!("{error:#}"))
        })
        .await
}

async fn sweep(pool: &PgPool, login_window: Duration) -> anyhow::Result<()> {
    let tokens =
        crate::db::delete_expired_refresh_tokens(pool, EXPIRED_REFRESH_TOKENS_KEPT).await?;
    let keys = crate::db::delete_unpublished_keys(pool).await?;
    let windows = crate::db::delete_finished_windows(pool, login_window).await?;
    tracing::debug!(tokens, keys, windows, "housekeeping");
    Ok(())
}
