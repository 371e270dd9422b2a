use actix_web::{HttpResponse, web};
use auth_kit::AdminUser;
use platform::http::ApiError;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{self, CatalogWriteError, ProductRow, VariantRow};
use crate::domain::{CatalogError, ProductDraft};

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/products", web::get().to(list_products))
        .route("/products/{id}", web::get().to(get_product))
        .route("/admin/products", web::post().to(create_product))
        .route("/admin/products/{id}", web::put().to(update_product));
}

#[derive(Debug, Serialize)]
struct ProductView {
    #[serde(flatten)]
    product: ProductRow,
    variants: Vec<VariantRow>,
}

const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;

#[derive(Debug, Deserialize)]
struct Browse {
    q: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
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

/// A page cursor is the (name, id) of the last product shown, hex-encoded so it is opaque and
/// URL-safe.
fn encode_cursor(product: &ProductRow) -> String {
    format!("{}\u{0}{}", product.name, product.id)
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_cursor(cursor: &str) -> Option<(String, Uuid)> {
    if !cursor.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let (name, id) = text.split_once('\u{0}')?;
    Some((name.to_owned(), Uuid::parse_str(id).ok()?))
}

async fn list_products(
    pool: web::Data<PgPool>,
    query: web::Query<Browse>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::validation(
            [(
                "limit".to_owned(),
                format!("must be between 1 and {MAX_PAGE}"),
            )]
            .into_iter()
            .collect(),
        ));
    }
    let after = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(cursor) => Some(decode_cursor(cursor).ok_or_else(|| {
            ApiError::validation(
                [(
                    "cursor".to_owned(),
                    "is not a cursor this API returned".to_owned(),
                )]
                .into_iter()
                .collect(),
            )
        })?),
        None => None,
    };
    let text = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    // One extra row tells whether another page exists.
    let mut products = db::list_products(&pool, text, after, limit + 1).await?;
    let more = products.len() as i64 > limit;
    products.truncate(usize::try_from(limit).unwrap_or(0));
    let next_cursor = if more {
        products.last().map(encode_cursor)
    } else {
        None
    };
    let items = with_variants(&pool, products).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "next_cursor": next_cursor })))
}

async fn get_product(
    pool: web::Data<PgPool>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::not_found("no such product");
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let product = db::find_product(&pool, id)
        .await?
        .filter(|p| !p.archived)
        .ok_or_else(not_found)?;
    let mut views = with_variants(&pool, vec![product]).await?;
    views
        .pop()
        .map(|view| HttpResponse::Ok().json(view))
        .ok_or_else(not_found)
}

#[derive(Debug, Deserialize)]
struct ProductUpdate {
    #[serde(flatten)]
    draft: ProductDraft,
    #[serde(default)]
    archived: bool,
}

fn invalid(error: &CatalogError) -> ApiError {
    let field = match error {
        CatalogError::InvalidCurrency(_) => "variants.currency",
        CatalogError::InvalidSku(_) => "variants.sku",
        CatalogError::NegativePrice { .. } => "variants.price_minor",
        CatalogError::NoVariants { .. } => "variants",
        CatalogError::Blank { field } => field,
    };
    ApiError::validation(
        [(field.to_owned(), error.to_string())]
            .into_iter()
            .collect(),
    )
}

fn write_failed(error: CatalogWriteError) -> ApiError {
    match error {
        CatalogWriteError::SlugTaken(_) | CatalogWriteError::SkuTaken(_) => {
            ApiError::conflict(error.to_string())
        }
        // Keeps the sqlx error itself in view, so unstorable text is reported as the client's.
        CatalogWriteError::Database(error) => error.into(),
        other => ApiError::internal(other),
    }
}

async fn save(
    pool: &PgPool,
    id: Option<Uuid>,
    update: &ProductUpdate,
) -> Result<ProductView, ApiError> {
    update.draft.validate().map_err(|error| invalid(&error))?;
    let mut tx = pool.begin().await?;
    let saved = db::save_product(&mut tx, id, &update.draft, update.archived)
        .await
        .map_err(write_failed)?;
    let id = saved.ok_or_else(|| ApiError::not_found("no such product"))?;
    tx.commit().await?;
    let product = db::find_product(pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such product"))?;
    with_variants(pool, vec![product])
        .await?
        .pop()
        .ok_or_else(|| ApiError::not_found("no such product"))
}

async fn create_product(
    _admin: AdminUser,
    pool: web::Data<PgPool>,
    body: web::Json<ProductUpdate>,
) -> Result<HttpResponse, ApiError> {
    let existing: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM products WHERE slug = $1")
        .bind(&body.draft.slug)
        .fetch_optional(pool.get_ref())
        .await?;
    if existing.is_some() {
        return Err(ApiError::conflict(format!(
            "a product with slug {:?} already exists",
            body.draft.slug
        )));
    }
    let view = save(&pool, None, &body).await?;
    Ok(HttpResponse::Created().json(view))
}

async fn update_product(
    _admin: AdminUser,
    pool: web::Data<PgPool>,
    id: web::Path<String>,
    body: web::Json<ProductUpdate>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("no such product"))?;
    let view = save(&pool, Some(id), &body).await?;
    Ok(HttpResponse::Ok().json(view))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let product = ProductRow {
            id: Uuid::now_v7(),
            slug: "tee".into(),
            name: "Tee – ünïcode".into(),
            description: String::new(),
            archived: false,
        };
        assert_eq!(
            decode_cursor(&encode_cursor(&product)),
            Some((product.name.clone(), product.id))
        );
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor("abc"), None);
        assert_eq!(decode_cursor("6162"), None);
    }
}
