//! Clean shutdown. actix-web already stops gracefully on SIGTERM and SIGINT; background workers
//! (consumers, relays) watch a [`CancellationToken`] that is cancelled once the server stops.

use actix_web::dev::Server;
use tokio::task::JoinSet;
pub use tokio_util::sync::CancellationToken;

/// Runs the HTTP server until a signal stops it, then cancels `shutdown` and waits for every
/// background task to finish its in-flight work.
pub async fn run_until_stopped(
    server: Server,
    shutdown: CancellationToken,
    mut workers: JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let served = server.await;
    tracing::info!("http server stopped; stopping background workers");
    shutdown.cancel();
    let mut first_error = served.err().map(anyhow::Error::from);
    while let Some(joined) = workers.join_next().await {
        let outcome = joined
            .map_err(anyhow::Error::from)
            .and_then(|result| result);
        if let Err(error) = outcome {
            tracing::error!(error = %format!("{error:#}"), "background worker failed");
            first_error.get_or_insert(error);
        }
    }
    tracing::info!("shutdown complete");
    first_error.map_or(Ok(()), Err)
}
