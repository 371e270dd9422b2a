//! Wires the gateway: configuration, the upstream client, readiness, and the server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::web;
use anyhow::Context;
use auth_kit::JwtVerifier;
use platform::config::HttpSettings;
use platform::http::client::HttpClient;
use platform::http::{Readiness, ReadinessCheck};

use crate::api::Service;
use crate::balance::Balancer;
use crate::config::Config;
use crate::edge::CorsPolicy;
use crate::http::Gate;
use crate::proxy::{self, Upstream};

/// A running gateway.
pub struct Gateway {
    pub port: u16,
    pub server: Server,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

pub fn build(config: Config) -> anyhow::Result<Gateway> {
    crate::api::check().map_err(|error| anyhow::anyhow!("the services' API documents: {error}"))?;
    let pool_idle_timeout = config.upstreams.pool_idle_timeout();
    if config.upstreams.pool_idle_timeout_ms >= HttpSettings::DEFAULT_KEEP_ALIVE_MS {
        // The gateway cannot see the upstreams' own keep-alive; their default is what it can
        // check against.
        tracing::warn!(
            pool_idle_timeout_ms = config.upstreams.pool_idle_timeout_ms,
            services_default_keep_alive_ms = HttpSettings::DEFAULT_KEEP_ALIVE_MS,
            "upstream connections stay idle at least as long as the services keep them by \
             default: every upstream's http.keep_alive_ms must be longer, or requests will meet \
             connections the upstream is closing"
        );
    }
    let client = proxy::client(pool_idle_timeout).context("building the upstream client")?;
    // Health checks have a client of their own, so they never take a connection requests
    // would use. It keeps a connection per instance rather than open one for every check (an
    // accept, a task and a handshake in each service, every second, for an idle stack). One the
    // instance closed (it stopped or restarted) is not handed out again, and a check that meets
    // one as it closes is sent once more on a new connection (`HttpClient::send`).
    let health_client = HttpClient::new(pool_idle_timeout, |builder| {
        builder
            .connect_timeout(Duration::from_secs(1))
            .pool_max_idle_per_host(1)
    })
    .context("building the health-check client")?;
    let timeout = Duration::from_millis(config.upstreams.timeout_ms);
    let down_for = Duration::from_millis(config.upstreams.down_for_ms);
    let health_interval = Duration::from_millis(config.upstreams.health_interval_ms.max(100));
    let mut balancers = HashMap::new();
    for (name, urls) in config.upstreams.named() {
        let instances = crate::config::instances(urls);
        anyhow::ensure!(
            !instances.is_empty(),
            "upstreams.{name} names no instance (one base URL, or several separated by commas)"
        );
        let balancer = Balancer::new(name, &instances, down_for);
        tracing::info!(service = name, instances = ?instances, "upstream");
        balancers.insert(name, balancer);
    }
    // Ready when every service has an instance that is ready.
    let ready_timeout = Duration::from_millis(config.upstreams.ready_timeout_ms);
    let readiness = balancers
        .values()
        .map(|balancer| upstream_ready(balancer.clone(), health_client.clone(), ready_timeout))
        .fold(Readiness::default(), Readiness::with);
    let mut upstreams = HashMap::new();
    for service in [
        Service::Auth,
        Service::Product,
        Service::Order,
        Service::Inventory,
        Service::Notification,
        Service::Shipping,
    ] {
        let balancer = balancers
            .get(service.name())
            .with_context(|| format!("no upstream for {}", service.name()))?
            .clone();
        // Only services the gateway forwards to are watched (payment is checked for
        // readiness, never called).
        balancer.watch(health_client.clone(), health_interval);
        upstreams.insert(
            service,
            Upstream {
                name: service.name(),
                instances: balancer,
                client: client.clone(),
                timeout,
            },
        );
    }
    let gate = web::Data::new(Gate {
        upstreams,
        verifier: JwtVerifier::new(config.auth.clone()),
        max_body_bytes: config.limits.max_body_bytes,
    });
    let cors = web::Data::new(CorsPolicy::new(&config.cors.origins()));
    let listener = platform::http::bind(&config.http)?;
    let port = listener.local_addr()?.port();
    let keep_alive = config.http.keep_alive();
    let server = platform::http::serve(
        listener,
        keep_alive,
        readiness,
        crate::http::routes(gate, cors),
    )?;
    tracing::info!(port, "gateway listening");
    Ok(Gateway { port, server })
}

/// The gateway is ready when every service it knows has an instance whose `/readyz` answers
/// 200 within `timeout`. `/readyz` reports each service under its name; the services are asked
/// at once, so one that hangs costs `timeout`, not the sum.
fn upstream_ready(
    balancer: Arc<Balancer>,
    client: HttpClient,
    timeout: Duration,
) -> ReadinessCheck {
    ReadinessCheck::new(balancer.service, move || {
        let balancer = balancer.clone();
        let client = client.clone();
        Box::pin(async move { balancer.any_ready(&client, timeout).await })
    })
}
