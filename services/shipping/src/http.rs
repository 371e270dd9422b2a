use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use auth_kit::AdminUser;
use messaging::trace::RequestTrace;
use platform::http::ApiError;
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{self, ShippingError};
use crate::domain::{ShipmentStatus, Step};

/// The shipping service's own routes (health endpoints come from `platform`).
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .app_data(query_config())
        .route("/admin/shipments", web::get().to(list))
        .route("/admin/shipments/{order_id}", web::get().to(get_one))
        .route(
            "/admin/shipments/{order_id}/dispatch",
            web::post().to(dispatch),
        )
        .route(
            "/admin/shipments/{order_id}/deliver",
            web::post().to(deliver),
        );
}

/// A malformed query string answers in the shared error shape, not actix's plain text.
fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|error, _request| ApiError::bad_request(error.to_string()).into())
}

fn field_error(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation(BTreeMap::from([(field.to_owned(), message.into())]))
}

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 500;

fn no_shipment() -> ApiError {
    ApiError::not_found("no shipment for this order")
}

fn parse_order_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| no_shipment())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<i64>,
}

async fn list(
    _admin: AdminUser,
    pool: web::Data<PgPool>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    // An empty `status=` is no filter, as a form with nothing chosen sends it.
    let status = query
        .status
        .as_deref()
        .filter(|status| !status.is_empty())
        .map(str::parse::<ShipmentStatus>)
        .transpose()
        .map_err(|why| field_error("status", why))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(field_error(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let items = db::shipments(&pool, status, limit).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

async fn get_one(
    _admin: AdminUser,
    pool: web::Data<PgPool>,
    order_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let shipment = db::shipment_of(&pool, parse_order_id(&order_id)?)
        .await?
        .ok_or_else(no_shipment)?;
    Ok(HttpResponse::Ok().json(shipment))
}

async fn dispatch(
    _admin: AdminUser,
    pool: web::Data<PgPool>,
    trace: RequestTrace,
    order_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    take_step(&pool, &order_id, Step::Dispatch, trace).await
}

async fn deliver(
    _admin: AdminUser,
    pool: web::Data<PgPool>,
    trace: RequestTrace,
    order_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    take_step(&pool, &order_id, Step::Deliver, trace).await
}

async fn take_step(
    pool: &PgPool,
    order_id: &str,
    step: Step,
    trace: RequestTrace,
) -> Result<HttpResponse, ApiError> {
    let order_id = parse_order_id(order_id)?;
    match db::advance(pool, order_id, step, trace.cause()).await {
        Ok(shipment) => Ok(HttpResponse::Ok().json(shipment)),
        Err(ShippingError::NoShipment) => Err(no_shipment()),
        Err(ShippingError::Refused(why)) => Err(ApiError::conflict(why)),
        Err(other) => Err(ApiError::internal(other)),
    }
}
