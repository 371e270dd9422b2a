use std::collections::HashMap;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::guard;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::middleware::from_fn;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError};
use anyhow::Context;
use auth_kit::{AuthError, AuthenticatedUser, JwtVerifier, bearer_token};
use futures::StreamExt;
use platform::config::HttpSettings;
use platform::http::client::{HttpClient, error_chain};
use platform::http::{ApiError, Readiness, ReadinessCheck};

use crate::config::Config;
use crate::edge::{CorsPolicy, RequestContext, edge};
use crate::proxy::{self, Forwarding, Upstream};
use crate::routes::{self, Access, RouteError, Service, Target};

/// What the forwarding handler needs.
#[derive(Debug, Clone)]
struct Gate {
    upstreams: HashMap<Service, Upstream>,
    verifier: JwtVerifier,
    max_body_bytes: usize,
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
    let server = platform::http::serve(listener, keep_alive, readiness, move |service| {
        service
            .app_data(gate.clone())
            .app_data(cors.clone())
            .route("/", get_or_head().to(crate::storefront::index))
            .route("/assets/{name}", get_or_head().to(crate::storefront::asset))
            .service(
                web::scope("/api")
                    .wrap(from_fn(edge))
                    .route("/openapi.json", web::get().to(crate::openapi::openapi_json))
                    .route("/docs", web::get().to(crate::openapi::docs_redirect))
                    .route("/docs/{tail:.*}", web::get().to(crate::openapi::docs_file))
                    .default_service(web::to(forward)),
            )
            .service(
                web::scope("/.well-known")
                    .wrap(from_fn(edge))
                    .default_service(web::to(forward)),
            );
    })?;
    tracing::info!(port, "gateway listening");
    Ok(Gateway { port, server })
}

/// A route for GET and HEAD (actix answers HEAD without the body).
fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// Every public API call: route, check the token, read the body within the limit, forward.
async fn forward(
    gate: web::Data<Gate>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    if !routes::is_clean_query(request.query_string()) {
        return Err(ApiError::bad_request("the query string is not allowed").into());
    }
    let route = match routes::resolve(request.method(), request.path()) {
        Ok(route) => route,
        Err(RouteError::NotFound) => return Err(ApiError::not_found("no such route").into()),
        Err(RouteError::BadPath) => {
            return Err(ApiError::bad_request("the path is not allowed").into());
        }
        Err(RouteError::MethodNotAllowed(allowed)) => {
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("this route only answers {allowed}"),
            )
            .error_response();
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
            return Ok(response);
        }
    };
    authorize(&gate.verifier, route.access, &request).await?;
    let Target::Upstream {
        service,
        path,
        streaming,
    } = route.target
    else {
        return Err(ApiError::not_found("no such route").into());
    };
    let upstream = gate
        .upstreams
        .get(&service)
        .ok_or_else(|| ApiError::not_found("no such route"))?;
    let body = read_body(&request, payload, gate.max_body_bytes).await?;
    let context = request
        .extensions()
        .get::<RequestContext>()
        .cloned()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no request context")))?;
    let forwarding = Forwarding {
        request_id: context.request_id,
        traceparent: context.traceparent.to_string(),
        client_ip: request.peer_addr().map(|peer| peer.ip()),
    };
    Ok(proxy::forward(upstream, &path, &request, body, &forwarding, streaming).await?)
}

/// The gateway checks the token before forwarding; the service checks it again.
async fn authorize(
    verifier: &JwtVerifier,
    access: Access,
    request: &HttpRequest,
) -> Result<(), AuthError> {
    if access == Access::Public {
        return Ok(());
    }
    let token = bearer_token(request.headers()).ok_or_else(AuthError::missing_token)?;
    let user = AuthenticatedUser::try_from(verifier.verify(token).await?)?;
    if access == Access::Admin && !user.is_admin() {
        tracing::info!(user_id = %user.user_id, path = request.path(), "admin route refused");
        return Err(AuthError::forbidden());
    }
    Ok(())
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body may be at most {limit} bytes"),
    )
}

/// Reads the whole body, refusing (413) as soon as it exceeds `limit`.
async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| usize::try_from(length).map_or(true, |length| length > limit))
    {
        return Err(too_large(limit));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::bad_request("the request body could not be read"))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
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
