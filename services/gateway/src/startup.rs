//! Wires the gateway: configuration, the upstream client, readiness, and the server.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::web;
use anyhow::Context;
use auth_kit::JwtVerifier;
use platform::config::HttpSettings;
use platform::http::client::{HttpClient, error_chain};
use platform::http::{Readiness, ReadinessCheck};

use crate::api::Service;
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
    let timeout = Duration::from_millis(config.upstreams.timeout_ms);
    let readiness = config
        .upstreams
        .named()
        .into_iter()
        .map(|(name, base_url)| upstream_alive(name, base_url.to_owned(), client.clone()))
        .fold(Readiness::default(), Readiness::with);
    let upstream = |service: Service, base_url: &str| {
        (
            service,
            Upstream {
                name: service.name(),
                base_url: base_url.trim_end_matches('/').to_owned(),
                client: client.clone(),
                timeout,
            },
        )
    };
    let urls = &config.upstreams;
    let gate = web::Data::new(Gate {
        upstreams: HashMap::from([
            upstream(Service::Auth, &urls.auth),
            upstream(Service::Product, &urls.product),
            upstream(Service::Order, &urls.order),
            upstream(Service::Inventory, &urls.inventory),
            upstream(Service::Notification, &urls.notification),
            upstream(Service::Shipping, &urls.shipping),
        ]),
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

/// The gateway is ready when every service it forwards to answers `/healthz`.
fn upstream_alive(name: &'static str, base_url: String, client: HttpClient) -> ReadinessCheck {
    ReadinessCheck::new(name, move || {
        let url = format!("{base_url}/healthz");
        let client = client.clone();
        Box::pin(async move {
            let answer = client
                .send(client.get(&url).timeout(Duration::from_secs(2)))
                .await
                .map_err(|error| error_chain(&error))?;
            if answer.status().is_success() {
                Ok(())
            } else {
                Err(format!("{url} answered {}", answer.status()))
            }
        })
    })
}
