//! Clean shutdown, made for running several instances of a service behind a balancer.
//!
//! On SIGTERM (or SIGINT) a server first **drains**: `/healthz` and `/readyz` answer 503
//! `draining`, every answer carries `Connection: close`, and it keeps serving for
//! [`drain_period`] (`BAZAAR_DRAIN_MS`, 2 s by default), long enough for a balancer's health check
//! (the gateway's runs every second) to stop sending it requests and to let go of its pooled
//! connections. Then the server stops accepting, finishes its in-flight requests (up to 10 s),
//! and only then are the background workers (consumers, relays) cancelled. So a rolling restart
//! costs the callers nothing: no request is refused, none meets a connection closing under it.
//! A second signal during the drain stops at once (in-flight requests still finish).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use tokio::task::JoinSet;
pub use tokio_util::sync::CancellationToken;

/// Environment variable: how long (ms) a server drains after SIGTERM before it stops accepting.
pub const DRAIN_ENV: &str = "BAZAAR_DRAIN_MS";
/// The drain when `BAZAAR_DRAIN_MS` is unset: twice the gateway's health-check interval.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(2);

/// How long a server keeps serving, unready, between SIGTERM and closing its listener:
/// `BAZAAR_DRAIN_MS`, else [`DEFAULT_DRAIN`]. 0 stops accepting at once (a lone instance, whose
/// callers have nowhere else to go).
pub fn drain_period() -> Duration {
    parse_drain(std::env::var(DRAIN_ENV).ok().as_deref())
}

fn parse_drain(value: Option<&str>) -> Duration {
    match value.map(str::trim) {
        None | Some("") => DEFAULT_DRAIN,
        Some(text) => text.parse::<u64>().map_or_else(
            |_| {
                tracing::warn!(
                    value = text,
                    "{DRAIN_ENV} is not a number of milliseconds; using the default"
                );
                DEFAULT_DRAIN
            },
            Duration::from_millis,
        ),
    }
}

/// Whether a server is draining; shared by its health endpoints and its answers.
#[derive(Debug, Clone, Default)]
pub struct Drain(Arc<AtomicBool>);

impl Drain {
    pub fn begin(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            _ => {
                tracing::warn!("cannot listen for SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Stops `server` gracefully on SIGTERM or SIGINT, draining first (see the module). Spawned by
/// [`crate::http::serve`] for every server it starts.
pub(crate) fn stop_on_signal(server: ServerHandle, drain: Drain, period: Duration) {
    tokio::spawn(async move {
        stop_signal().await;
        drain.begin();
        tracing::info!(
            drain_ms = period.as_millis() as u64,
            "stop requested: draining (unready, connections closed after each answer) before the listener closes"
        );
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = stop_signal() => tracing::info!("second stop request: ending the drain now"),
        }
        tracing::info!("no longer accepting connections; finishing in-flight requests");
        server.stop(true).await;
    });
}

/// Runs the HTTP server until a signal stops it (after its drain), then cancels `shutdown` and
/// waits for every background task to finish its in-flight work.
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
    if crate::telemetry::exporting() {
        // Off the runtime's threads: the flush waits for exports that run on them.
        let _ = tokio::task::spawn_blocking(crate::telemetry::shutdown).await;
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_defaults_to_two_seconds_and_reads_milliseconds() {
        assert_eq!(parse_drain(None), DEFAULT_DRAIN);
        assert_eq!(parse_drain(Some("")), DEFAULT_DRAIN);
        assert_eq!(parse_drain(Some("0")), Duration::ZERO);
        assert_eq!(parse_drain(Some(" 1500 ")), Duration::from_millis(1500));
        assert_eq!(parse_drain(Some("soon")), DEFAULT_DRAIN);
    }
}
