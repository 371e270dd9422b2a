//! The auth service's reactions and workers. It consumes no topic: it only publishes
//! (UserRegistered, through the outbox), and accounts change only through its own API and
//! command line. Its one worker deletes what has expired.

use std::time::Duration;

use messaging::worker::{PollingWorker, Round};
use platform::shutdown::CancellationToken;
use sqlx::PgPool;

/// Topics the auth service consumes: none.
pub const TOPICS: &[&str] = &[];

/// How often expired refresh tokens, retired keys and finished throttling windows are deleted.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(600);
/// Expired refresh tokens are kept this long, so a late reuse is still recognised as reuse.
const EXPIRED_REFRESH_TOKENS_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Deletes expired refresh tokens, retired keys past their publication and finished login
/// windows, until shutdown.
pub async fn housekeeping(
    pool: PgPool,
    throttle_window: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    PollingWorker::new("auth housekeeping", HOUSEKEEPING_INTERVAL)
        .run(pool.clone(), shutdown, || async {
            sweep(&pool, throttle_window)
                .await
                .map(|()| Round::Idle)
                .map_err(|error| format!("{error:#}"))
        })
        .await
}

async fn sweep(pool: &PgPool, throttle_window: Duration) -> anyhow::Result<()> {
    let tokens =
        crate::db::delete_expired_refresh_tokens(pool, EXPIRED_REFRESH_TOKENS_KEPT).await?;
    let keys = crate::db::delete_unpublished_keys(pool).await?;
    let windows = crate::db::delete_finished_windows(pool, throttle_window).await?;
    tracing::debug!(tokens, keys, windows, "housekeeping");
    Ok(())
}
