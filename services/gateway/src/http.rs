//! The gateway's HTTP face: the storefront, the OpenAPI document and Swagger UI, and every
//! public API call, checked and forwarded as the route table says.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use actix_web::guard;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::middleware::from_fn;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use auth_kit::{AuthError, AuthenticatedUser, JwtVerifier, bearer_token};
use futures::StreamExt;
use platform::http::{ApiError, method_not_allowed};

use crate::edge::{CorsPolicy, RequestContext, edge};
use crate::proxy::{self, Forwarding, Upstream};
use crate::routes::{self, Access, RouteError, Service, Target};

/// What the forwarding handler needs.
#[derive(Debug, Clone)]
pub struct Gate {
    pub upstreams: HashMap<Service, Upstream>,
    pub verifier: JwtVerifier,
    pub max_body_bytes: usize,
}

/// Every route of the gateway.
pub fn routes(
    gate: web::Data<Gate>,
    cors: web::Data<CorsPolicy>,
) -> impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static {
    move |service| {
        service
            .app_data(gate.clone())
            .app_data(cors.clone())
            .route("/", get_or_head().to(crate::storefront::index))
            .route("/assets/{name}", get_or_head().to(crate::storefront::asset))
            .service(
                web::scope("/api")
                    .wrap(from_fn(edge))
                    .route("/openapi.json", web::get().to(openapi_json))
                    .route("/docs", web::get().to(docs_redirect))
                    .route("/docs/{tail:.*}", web::get().to(docs_file))
                    .default_service(web::to(forward)),
            )
            .service(
                web::scope("/.well-known")
                    .wrap(from_fn(edge))
                    .default_service(web::to(forward)),
            );
    }
}

/// A route for GET and HEAD (actix answers HEAD without the body).
fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// Every public API call: route, check the token, read the body within the limit, forward.
/// A declared path asked with another method answers 405 with the declared ones in `Allow`.
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
    };
    authorize(&gate.verifier, route.access, &request).await?;
    let (service, path, streaming) = match route.target {
        Target::Upstream {
            service,
            path,
            streaming,
        } => (service, path, streaming),
        Target::WrongMethod { allow } => return Ok(method_not_allowed(allow)),
        Target::Nothing => return Err(ApiError::not_found("no such route").into()),
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

/// The public OpenAPI document, derived from the services' own ([`crate::api`]).
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::api::document())
}

/// Relative asset links in Swagger UI's page need the trailing slash.
async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/api/docs/"))
        .finish()
}

async fn docs_file(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    static CONFIG: OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> = OnceLock::new();
    let config = CONFIG
        .get_or_init(|| Arc::new(utoipa_swagger_ui::Config::from("/api/openapi.json")))
        .clone();
    match utoipa_swagger_ui::serve(&path, config) {
        Ok(Some(file)) => {
            let mut response = HttpResponse::Ok();
            response.content_type(file.content_type);
            if file.gzpipped {
                response.insert_header((header::CONTENT_ENCODING, "gzip"));
            }
            Ok(response.body(file.bytes.into_owned()))
        }
        Ok(None) => Err(ApiError::not_found("no such file")),
        Err(error) => Err(ApiError::internal(anyhow::anyhow!("swagger ui: {error}"))),
    }
}
