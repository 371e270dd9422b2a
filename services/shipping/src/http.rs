//! Shipments for administrators, each route declared once on its handler.
// utoipa's `#[utoipa::path]` re-emits the types it is given with their full paths.
#![allow(unused_qualifications)]

use std::collections::BTreeMap;

use actix_web::{HttpResponse, get, post, web};
use auth_kit::AdminUser;
use messaging::trace::RequestTrace;
use platform::http::ApiError;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use crate::db::{self, ShippingError};
use shipping_rules::{ShipmentStatus, Step};

/// The shipping service's own routes (health endpoints come from `platform`).
pub fn routes(config: &mut web::ServiceConfig) {
    config.app_data(query_config());
    platform::openapi::register(config, handlers);
}

/// Every route, each declared once on its handler; served by [`routes`], described by [`openapi`].
fn handlers(config: &mut ServiceConfig<'_>) {
    config
        .service(list_shipments)
        .service(get_shipment)
        .service(dispatch_shipment)
        .service(deliver_shipment);
}

#[derive(OpenApi)]
#[openapi(
    info(title = "shipping service", description = "Shipments."),
    tags((name = "admin", description = "Needs the admin role"))
)]
struct Api;

/// The shipping service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    platform::openapi::document(Api::openapi(), handlers)
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only shipments in this status; empty for all.
    #[param(pattern = "^(|scheduled|dispatched|delivered)$")]
    status: Option<String>,
    /// How many, newest first.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ShipmentList {
    items: Vec<db::ShipmentRow>,
}

#[utoipa::path(
    tag = "admin",
    security(("bearer" = ["admin"])),
    params(ListQuery),
    responses(
        (status = 200, description = "The newest shipments", body = ShipmentList),
        (status = 422, description = "Unknown status or limit out of range", body = platform::http::ErrorBody),
    ),
)]
#[get("/admin/shipments")]
async fn list_shipments(
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
    Ok(HttpResponse::Ok().json(ShipmentList { items }))
}

#[utoipa::path(
    tag = "admin",
    security(("bearer" = ["admin"])),
    params(("order_id" = Uuid, Path, description = "The order the shipment is for")),
    responses(
        (status = 200, description = "The order's shipment", body = db::ShipmentRow),
        (status = 404, description = "No shipment for this order", body = platform::http::ErrorBody),
    ),
)]
#[get("/admin/shipments/{order_id}")]
async fn get_shipment(
    _admin: AdminUser,
    pool: web::Data<PgPool>,
    order_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let shipment = db::shipment_of(&pool, parse_order_id(&order_id)?)
        .await?
        .ok_or_else(no_shipment)?;
    Ok(HttpResponse::Ok().json(shipment))
}

#[utoipa::path(
    tag = "admin",
    security(("bearer" = ["admin"])),
    params(("order_id" = Uuid, Path, description = "The order the shipment is for")),
    responses(
        (status = 200, description = "Dispatched (or already was); ShipmentDispatched is published once", body = db::ShipmentRow),
        (status = 404, description = "No shipment for this order", body = platform::http::ErrorBody),
        (status = 409, description = "Already delivered", body = platform::http::ErrorBody),
    ),
)]
#[post("/admin/shipments/{order_id}/dispatch")]
async fn dispatch_shipment(
    _admin: AdminUser,
    pool: web::Data<PgPool>,
    trace: RequestTrace,
    order_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    take_step(&pool, &order_id, Step::Dispatch, trace).await
}

#[utoipa::path(
    tag = "admin",
    security(("bearer" = ["admin"])),
    params(("order_id" = Uuid, Path, description = "The order the shipment is for")),
    responses(
        (status = 200, description = "Delivered (or already was); ShipmentDelivered is published once", body = db::ShipmentRow),
        (status = 404, description = "No shipment for this order", body = platform::http::ErrorBody),
        (status = 409, description = "Not dispatched yet", body = platform::http::ErrorBody),
    ),
)]
#[post("/admin/shipments/{order_id}/deliver")]
async fn deliver_shipment(
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
    match crate::consumers::advance(pool, order_id, step, trace.cause()).await {
        Ok(shipment) => Ok(HttpResponse::Ok().json(shipment)),
        Err(ShippingError::NoShipment) => Err(no_shipment()),
        Err(ShippingError::Refused(why)) => Err(ApiError::conflict(why)),
        Err(other) => Err(ApiError::internal(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_the_committed_document_is_current() {
        platform::openapi::assert_committed("shipping", &openapi());
    }

    #[test]
    fn the_documented_filters_are_the_enforced_ones() {
        let document = serde_json::to_value(openapi()).expect("json");
        let parameters = document["paths"]["/admin/shipments"]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .clone();
        let status = parameters
            .iter()
            .find(|p| p["name"] == "status")
            .expect("status");
        let pattern = status["schema"]["pattern"].as_str().expect("pattern");
        let listed: Vec<&str> = pattern
            .trim_start_matches("^(|")
            .trim_end_matches(")$")
            .split('|')
            .collect();
        for text in &listed {
            assert!(text.parse::<ShipmentStatus>().is_ok(), "{text}");
        }
        for status in ShipmentStatus::ALL {
            assert!(listed.contains(&status.as_str()), "{status:?}");
        }
        let limit = parameters
            .iter()
            .find(|p| p["name"] == "limit")
            .expect("limit");
        assert_eq!(limit["schema"]["maximum"], MAX_LIMIT);
    }
}
