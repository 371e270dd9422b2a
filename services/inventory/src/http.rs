//! The inventory's API: stock levels for administrators, each route declared once on its handler.
// utoipa's `#[utoipa::path]` re-emits the types it is given with their full paths.
#![allow(unused_qualifications)]

use std::collections::BTreeMap;

use actix_web::{HttpResponse, get, put, web};
use auth_kit::AdminUser;
use platform::http::ApiError;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{OpenApi, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use inventory_rules::{StockLevel, StockRuleError};

use crate::db::{self, StockError};

/// The inventory service's routes (health endpoints come from `platform`). `/stock/{sku}` is for
/// the services inside, so it is not in the document the gateway publishes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.route("/stock/{sku}", web::get().to(get_stock));
    platform::openapi::register(config, handlers);
}

/// Every public route, each declared once on its handler; served by [`routes`], described by
/// [`openapi`].
fn handlers(config: &mut ServiceConfig<'_>) {
    config.service(set_stock).service(get_stock_admin);
}

#[derive(OpenApi)]
#[openapi(
    info(title = "inventory service", description = "Stock levels."),
    tags((name = "admin", description = "Needs the admin role"))
)]
struct Api;

/// The inventory service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    platform::openapi::document(Api::openapi(), handlers)
}

/// The catalog's SKU rule (see the product service): stock is kept only for what could be sold.
fn is_sku(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = StockLevel)]
struct StockView<'a> {
    #[schema(example = "TEE-BLK-M")]
    sku: &'a str,
    on_hand: i64,
    reserved: i64,
    /// What new orders may still reserve: `on_hand - reserved`.
    available: i64,
}

fn view(level: &StockLevel) -> StockView<'_> {
    StockView {
        sku: &level.sku,
        on_hand: level.on_hand,
        reserved: level.reserved,
        available: level.available(),
    }
}

fn no_stock() -> ApiError {
    ApiError::not_found("no stock record for this SKU")
}

async fn get_stock(
    pool: web::Data<PgPool>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let level = db::stock_level(&pool, &sku).await?.ok_or_else(no_stock)?;
    Ok(HttpResponse::Ok().json(view(&level)))
}

#[utoipa::path(
    tag = "admin",
    security(("bearer" = ["admin"])),
    params(("sku" = String, Path, description = "A SKU of the catalog", pattern = r"^[A-Z0-9-]{1,64}$", example = "TEE-BLK-M")),
    responses(
        (status = 200, description = "The stock level", body = StockView),
        (status = 404, description = "No stock recorded for this SKU", body = platform::http::ErrorBody),
    ),
)]
#[get("/admin/inventory/{sku}")]
async fn get_stock_admin(
    _admin: AdminUser,
    pool: web::Data<PgPool>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !is_sku(&sku) {
        return Err(no_stock());
    }
    get_stock(pool, sku).await
}

#[derive(Debug, Deserialize, ToSchema)]
struct SetStock {
    /// At least what is reserved now.
    #[serde(deserialize_with = "platform::http::integer")]
    #[schema(minimum = 0, example = 25)]
    on_hand: i64,
}

#[utoipa::path(
    tag = "admin",
    security(("bearer" = ["admin"])),
    params(("sku" = String, Path, description = "A SKU of the catalog", pattern = r"^[A-Z0-9-]{1,64}$", example = "TEE-BLK-M")),
    request_body = SetStock,
    responses(
        (status = 200, description = "The new stock level", body = StockView),
        (status = 409, description = "Below what is reserved", body = platform::http::ErrorBody),
        (status = 422, description = "Not a SKU, or a negative quantity", body = platform::http::ErrorBody),
    ),
)]
#[put("/admin/inventory/{sku}")]
async fn set_stock(
    _admin: AdminUser,
    pool: web::Data<PgPool>,
    sku: web::Path<String>,
    body: web::Json<SetStock>,
) -> Result<HttpResponse, ApiError> {
    if !is_sku(&sku) {
        return Err(ApiError::validation(BTreeMap::from([(
            "sku".to_owned(),
            "must be 1-64 characters of A-Z, 0-9 and '-'".to_owned(),
        )])));
    }
    let mut tx = pool.begin().await?;
    let level = crate::consumers::set_on_hand(&mut tx, &sku, body.on_hand)
        .await
        .map_err(|error| match error {
            StockError::Refused(StockRuleError::BelowReserved { .. }) => {
                ApiError::conflict(error.to_string())
            }
            StockError::Refused(StockRuleError::Negative) => ApiError::validation(
                [("on_hand".to_owned(), error.to_string())]
                    .into_iter()
                    .collect(),
            ),
            StockError::Database(error) => error.into(),
            other => ApiError::internal(other),
        })?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(view(&level)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_the_committed_document_is_current() {
        platform::openapi::assert_committed("inventory", &openapi());
    }

    #[test]
    fn skus_follow_the_documented_pattern() {
        for sku in ["TEE-BLK-M", "A", "0", "-", &"X".repeat(64)] {
            assert!(is_sku(sku), "{sku}");
        }
        for not in ["", "tee", "TEE M", "TEE/M", "É", &"X".repeat(65)] {
            assert!(!is_sku(not), "{not}");
        }
        let document = serde_json::to_value(openapi()).expect("json");
        let sku = &document["paths"]["/admin/inventory/{sku}"]["put"]["parameters"][0];
        assert_eq!(sku["schema"]["pattern"], "^[A-Z0-9-]{1,64}$");
    }
}
