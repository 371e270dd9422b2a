use actix_web::{HttpResponse, web};
use auth_kit::AdminUser;
use platform::http::ApiError;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;

use crate::db::{self, StockError};
use crate::domain::StockLevel;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/stock/{sku}", web::get().to(get_stock))
        .route("/admin/inventory/{sku}", web::put().to(set_stock))
        .route("/admin/inventory/{sku}", web::get().to(get_stock_admin));
}

fn view(level: &StockLevel) -> serde_json::Value {
    json!({
        "sku": level.sku,
        "on_hand": level.on_hand,
        "reserved": level.reserved,
        "available": level.available(),
    })
}

async fn get_stock(
    pool: web::Data<PgPool>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let level = db::stock_level(&pool, &sku)
        .await?
        .ok_or_else(|| ApiError::not_found("no stock record for this SKU"))?;
    Ok(HttpResponse::Ok().json(view(&level)))
}

async fn get_stock_admin(
    _admin: AdminUser,
    pool: web::Data<PgPool>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    get_stock(pool, sku).await
}

#[derive(Debug, Deserialize)]
struct SetStock {
    on_hand: i64,
}

async fn set_stock(
    _admin: AdminUser,
    pool: web::Data<PgPool>,
    sku: web::Path<String>,
    body: web::Json<SetStock>,
) -> Result<HttpResponse, ApiError> {
    let mut tx = pool.begin().await?;
    let level =
        db::set_on_hand(&mut tx, &sku, body.on_hand)
            .await
            .map_err(|error| match error {
                StockError::BelowReserved { .. } => ApiError::conflict(error.to_string()),
                StockError::Negative => ApiError::validation(
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
