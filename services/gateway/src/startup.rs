use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{HttpRequest, HttpResponse, web};
use platform::http::{ApiError, Readiness, ReadinessCheck};

use crate::config::Config;
use crate::proxy::{self, Upstream};

const STOREFRONT: &str = include_str!("../static/index.html");

/// The routes each service owns, by public prefix.
#[derive(Debug, Clone)]
struct Routes {
    product: Upstream,
}

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
    let client = proxy::client(Duration::from_millis(config.upstreams.timeout_ms));
    let readiness = config
        .upstreams
        .named()
        .into_iter()
        .map(|(name, base_url)| upstream_alive(name, base_url.to_owned(), client.clone()))
        .fold(Readiness::default(), Readiness::with);
    let routes = Routes {
        product: Upstream {
            name: "product",
            base_url: config.upstreams.product.clone(),
            client,
        },
    };
    let listener = platform::http::bind(&config.http)?;
    let port = listener.local_addr()?.port();
    let server = platform::http::serve(listener, readiness, move |service| {
        service
            .app_data(web::Data::new(routes.clone()))
            .route("/", web::get().to(storefront))
            .route("/api/products", web::get().to(products))
            .route("/api/products/{tail:.*}", web::get().to(products));
    })?;
    tracing::info!(port, "gateway listening");
    Ok(Gateway { port, server })
}

async fn storefront() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(STOREFRONT)
}

async fn products(
    routes: web::Data<Routes>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let path = request.path().trim_start_matches("/api");
    proxy::forward(&routes.product, path, &request, body).await
}

/// The gateway is ready when every service it forwards to answers `/healthz`.
fn upstream_alive(name: &'static str, base_url: String, client: reqwest::Client) -> ReadinessCheck {
    ReadinessCheck::new(name, move || {
        let url = format!("{base_url}/healthz");
        let client = client.clone();
        Box::pin(async move {
            let answer = client
                .get(&url)
                .send()
                .await
                .map_err(|error| error.to_string())?;
            if answer.status().is_success() {
                Ok(())
            } else {
                Err(format!("{url} answered {}", answer.status()))
            }
        })
    })
}
