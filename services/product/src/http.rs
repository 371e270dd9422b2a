use actix_web::{HttpResponse, web};
use platform::http::ApiError;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{self, ProductRow, VariantRow};

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/products", web::get().to(list_products))
        .route("/products/{id}", web::get().to(get_product));
}

#[derive(Debug, Serialize)]
struct ProductView {
    #[serde(flatten)]
    product: ProductRow,
    variants: Vec<VariantRow>,
}

async fn with_variants(
    pool: &PgPool,
    products: Vec<ProductRow>,
) -> Result<Vec<ProductView>, ApiError> {
    let ids: Vec<Uuid> = products.iter().map(|product| product.id).collect();
    let mut variants = db::variants_of(pool, &ids).await?;
    Ok(products
        .into_iter()
        .map(|product| {
            let (own, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut variants)
                .into_iter()
                .partition(|v| v.product_id == product.id);
            variants = rest;
            ProductView {
                product,
                variants: own,
            }
        })
        .collect())
}

async fn list_products(pool: web::Data<PgPool>) -> Result<HttpResponse, ApiError> {
    let products = db::list_products(&pool).await?;
    let items = with_variants(&pool, products).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

async fn get_product(
    pool: web::Data<PgPool>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::not_found("no such product");
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let product = db::find_product(&pool, id).await?.ok_or_else(not_found)?;
    let mut views = with_variants(&pool, vec![product]).await?;
    views
        .pop()
        .map(|view| HttpResponse::Ok().json(view))
        .ok_or_else(not_found)
}
