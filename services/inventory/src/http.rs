use actix_web::{HttpResponse, web};
use platform::http::ApiError;
use serde_json::json;
use sqlx::PgPool;

use crate::db;

pub fn routes(config: &mut web::ServiceConfig) {
    config.route("/stock/{sku}", web::get().to(get_stock));
}

async fn get_stock(
    pool: web::Data<PgPool>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let level = db::stock_level(&pool, &sku)
        .await?
        .ok_or_else(|| ApiError::not_found("no stock record for this SKU"))?;
    Ok(HttpResponse::Ok().json(json!({
        "sku": level.sku,
        "on_hand": level.on_hand,
        "reserved": level.reserved,
        "available": level.available(),
    })))
}
