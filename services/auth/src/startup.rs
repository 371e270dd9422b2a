use std::time::Duration;

use actix_web::web;
use auth_kit::JwtVerifier;
use platform::app::Application;

use crate::addresses::TrustedProxies;
use crate::config::{Config, SERVICE};
use crate::http::AuthState;
use crate::keys::DatabaseJwks;
use crate::passwords::Passwords;
use crate::sessions::Sessions;

/// Migrates the database, makes sure a signing key exists, serves HTTP, and runs the outbox
/// relay and the housekeeping worker. Port 0 picks a free port (tests).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let state = web::Data::new(AuthState {
        sessions: Sessions::new(config.auth.clone(), &config.tokens),
        passwords: Passwords::for_this_machine(),
        login_limit: config.login_limit.clone(),
        register_limit: config.register_limit.clone(),
        trusted_proxies: TrustedProxies::parse(&config.client_address.trusted_proxies)?,
    });
    // The service checks its own tokens against the keys in its database. The routes exist
    // before the application's pool does, so the key source has a small lazy pool of its own.
    let key_pool = platform::db::pool_options()
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
    // Throttling windows are deleted once the longest of them is over.
    let window = Duration::from_secs(
        config
            .login_limit
            .window_secs
            .max(config.register_limit.window_secs),
    );
    let mut app = messaging::service::start(SERVICE, config.service, move |app| {
        app.migrations(&crate::db::MIGRATOR)
            .routes(crate::http::routes(state, verifier))
    })
    .await?;
    crate::keys::active_signing_key(app.pool()).await?;
    let pool = app.pool().clone();
    app.spawn_worker(move |shutdown| crate::consumers::housekeeping(pool, window, shutdown));
    Ok(app)
}
