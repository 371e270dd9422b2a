use actix_web::dev::Server;
use anyhow::Context;
use platform::http::Readiness;

use crate::config::Config;
use crate::http::Simulator;

/// A running simulator.
pub struct PaymentGateway {
    /// The bound port; differs from the configured one when that was 0.
    pub port: u16,
    pub server: Server,
}

impl std::fmt::Debug for PaymentGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentGateway")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Binds and starts serving. Port 0 picks a free port (tests). Must be called inside a Tokio
/// runtime; awaiting `server` runs it until SIGTERM or its handle stops it.
pub fn build(config: Config) -> anyhow::Result<PaymentGateway> {
    config
        .faults
        .validate()
        .context("invalid fault injection settings")?;
    let simulator = actix_web::web::Data::new(Simulator::new(config.faults));
    let listener = platform::http::bind(&config.http)
        .with_context(|| format!("cannot listen on {}", config.http.address()))?;
    let port = listener.local_addr()?.port();
    // Nothing to depend on: ready as soon as it listens.
    let keep_alive = config.http.keep_alive();
    let test_mode = config.test_mode;
    let server =
        platform::http::serve(listener, keep_alive, Readiness::default(), move |service| {
            crate::http::routes(service, simulator.clone());
            if test_mode {
                crate::http::test_routes(service);
            }
        })?;
    tracing::info!(
        port,
        faults = ?config.faults,
        test_mode,
        "payment gateway simulator listening"
    );
    Ok(PaymentGateway { port, server })
}
