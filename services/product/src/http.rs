//! The catalog's API: browsing for anyone, writing for administrators; each route declared once
//! on its handler.
// utoipa's `#[utoipa::path]` re-emits the types it is given with their full paths.
#![allow(unused_qualifications)]

use actix_web::{HttpResponse, get, post, put, web};
use auth_kit::AdminUser;
use platform::http::ApiError;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use product_rules::Availability;

use crate::config::StockSettings;
use crate::db::{self, CatalogWriteError, ListedVariant, ProductRow, VariantRow};
use crate::domain::{CatalogError, ProductDraft};

/// The product service's routes (health endpoints come from `platform`).
pub fn routes(config: &mut web::ServiceConfig) {
    platform::openapi::register(config, handlers);
}

/// Every route, each declared once on its handler; served by [`routes`], described by [`openapi`].
fn handlers(config: &mut ServiceConfig<'_>) {
    config
        .service(list_products)
        .service(get_product)
        .service(create_product)
        .service(update_product);
}

#[derive(OpenApi)]
#[openapi(
    info(title = "product service", description = "The catalog."),
    tags(
        (name = "catalog", description = "Browsing products"),
        (name = "admin", description = "Needs the admin role"),
    )
)]
struct Api;

/// The product service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    platform::openapi::document(Api::openapi(), handlers)
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Product)]
struct ProductView {
    #[serde(flatten)]
    product: ProductRow,
    variants: Vec<VariantView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Variant)]
struct VariantView {
    #[serde(flatten)]
    variant: VariantRow,
    #[schema(schema_with = availability_schema)]
    availability: Availability,
}

/// The availability values, as the rules name them.
fn availability_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "From inventory's stock levels, which the catalog replicates with a lag of well \
             under a second: advice for browsing, as the reservation at checkout decides. \
             `in_stock`; `low`, few left (the product service's `stock.low_threshold` or \
             fewer); `sold_out`, none left to reserve; `unknown`, no stock level heard for the \
             SKU yet (checkout decides).",
        ))
        .enum_values(Some(Availability::ALL.map(Availability::as_str)))
        .examples([serde_json::json!(Availability::InStock.as_str())])
        .build()
}

const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Browse {
    /// Text to search for in names and descriptions (no NUL characters).
    #[param(pattern = r"^[^\u0000]*$")]
    q: Option<String>,
    /// From the previous page's `next_cursor`; empty means the first page.
    #[param(
        pattern = r"^((0[1-9a-fA-F]|[1-9a-fA-F][0-9a-fA-F])*00(3[0-9]|[46][1-6]){8}2[dD]((3[0-9]|[46][1-6]){4}2[dD]){3}(3[0-9]|[46][1-6]){12})?$"
    )]
    cursor: Option<String>,
    /// Page size.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `true`: only products with a variant in stock (`in_stock` or `low`), with only those
    /// variants. A variant whose stock level is `unknown` is left out.
    in_stock: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ProductPage {
    items: Vec<ProductView>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// The products with their variants and each variant's availability; with `min_available`,
/// only the variants with at least that many units available.
async fn with_variants(
    pool: &PgPool,
    stock: &StockSettings,
    products: Vec<ProductRow>,
    min_available: Option<i64>,
) -> Result<Vec<ProductView>, ApiError> {
    let ids: Vec<Uuid> = products.iter().map(|product| product.id).collect();
    let mut variants = db::variants_of(pool, &ids, min_available).await?;
    Ok(products
        .into_iter()
        .map(|product| {
            let (own, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut variants)
                .into_iter()
                .partition(|listed| listed.variant.product_id == product.id);
            variants = rest;
            ProductView {
                product,
                variants: own
                    .into_iter()
                    .map(|ListedVariant { variant, available }| VariantView {
                        availability: product_rules::availability(available, stock.low_threshold),
                        variant,
                    })
                    .collect(),
            }
        })
        .collect())
}

/// A page cursor is the (name, id) of the last product shown, hex-encoded so it is opaque and
/// URL-safe. Any (name, id) is a place to page from, so any hex pairs that spell a name without
/// NUL, a NUL, and a hyphenated id are a cursor (the name read leniently as UTF-8): exactly the
/// `cursor` pattern of the document.
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
    let bytes = bytes?;
    let separator = bytes.iter().position(|byte| *byte == 0)?;
    let id = std::str::from_utf8(&bytes[separator + 1..]).ok()?;
    // Only the hyphenated form, which the encoder writes and the pattern allows.
    if id.len() != 36 {
        return None;
    }
    let name = String::from_utf8_lossy(&bytes[..separator]).into_owned();
    Some((name, Uuid::parse_str(id).ok()?))
}

#[utoipa::path(
    tag = "catalog",
    params(Browse),
    responses(
        (status = 200, description = "A page of products, by name", body = ProductPage),
        (status = 422, description = "Limit out of range or not a cursor", body = platform::http::ErrorBody),
    ),
)]
#[get("/products")]
async fn list_products(
    pool: web::Data<PgPool>,
    stock: web::Data<StockSettings>,
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
    let min_available = (query.in_stock == Some(true)).then_some(product_rules::IN_STOCK_FROM);
    // One extra row tells whether another page exists.
    let mut products = db::list_products(&pool, text, after, min_available, limit + 1).await?;
    let more = products.len() as i64 > limit;
    products.truncate(usize::try_from(limit).unwrap_or(0));
    let next_cursor = if more {
        products.last().map(encode_cursor)
    } else {
        None
    };
    let items = with_variants(&pool, &stock, products, min_available).await?;
    Ok(HttpResponse::Ok().json(ProductPage { items, next_cursor }))
}

#[utoipa::path(
    tag = "catalog",
    params(("id" = Uuid, Path, description = "The product")),
    responses(
        (status = 200, description = "The product", body = ProductView),
        (status = 404, description = "No such product (or archived)", body = platform::http::ErrorBody),
    ),
)]
#[get("/products/{id}")]
async fn get_product(
    pool: web::Data<PgPool>,
    stock: web::Data<StockSettings>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::not_found("no such product");
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let product = db::find_product(&pool, id)
        .await?
        .filter(|p| !p.archived)
        .ok_or_else(not_found)?;
    let mut views = with_variants(&pool, &stock, vec![product], None).await?;
    views
        .pop()
        .map(|view| HttpResponse::Ok().json(view))
        .ok_or_else(not_found)
}

#[derive(Debug, Deserialize, ToSchema)]
struct ProductUpdate {
    #[serde(flatten)]
    draft: ProductDraft,
    /// An archived product is no longer listed or sold.
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
    stock: &StockSettings,
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
    with_variants(pool, stock, vec![product], None)
        .await?
        .pop()
        .ok_or_else(|| ApiError::not_found("no such product"))
}

#[utoipa::path(
    tag = "admin",
    security(("bearer" = ["admin"])),
    request_body = ProductUpdate,
    responses(
        (status = 201, description = "Created; a ProductSnapshot is published", body = ProductView),
        (status = 409, description = "Slug or SKU taken", body = platform::http::ErrorBody),
        (status = 422, description = "Invalid product", body = platform::http::ErrorBody),
    ),
)]
#[post("/admin/products")]
async fn create_product(
    _admin: AdminUser,
    pool: web::Data<PgPool>,
    stock: web::Data<StockSettings>,
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
    let view = save(&pool, &stock, None, &body).await?;
    Ok(HttpResponse::Created().json(view))
}

#[utoipa::path(
    tag = "admin",
    security(("bearer" = ["admin"])),
    params(("id" = Uuid, Path, description = "The product")),
    request_body = ProductUpdate,
    responses(
        (status = 200, description = "Updated; a ProductSnapshot is published", body = ProductView),
        (status = 404, description = "No such product", body = platform::http::ErrorBody),
        (status = 409, description = "Slug or SKU taken by another product", body = platform::http::ErrorBody),
        (status = 422, description = "Invalid product", body = platform::http::ErrorBody),
    ),
)]
#[put("/admin/products/{id}")]
async fn update_product(
    _admin: AdminUser,
    pool: web::Data<PgPool>,
    stock: web::Data<StockSettings>,
    id: web::Path<String>,
    body: web::Json<ProductUpdate>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("no such product"))?;
    let view = save(&pool, &stock, Some(id), &body).await?;
    Ok(HttpResponse::Ok().json(view))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> String {
        text.bytes().map(|byte| format!("{byte:02x}")).collect()
    }

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
        // Any name is a place to page from, even one that is not UTF-8.
        let lenient = format!("ff00{}", hex(&product.id.to_string()));
        assert_eq!(
            decode_cursor(&lenient),
            Some(("\u{fffd}".to_owned(), product.id))
        );
        assert_eq!(
            decode_cursor(&format!("6100{}", hex(&product.id.simple().to_string()))),
            None
        );
        assert_eq!(decode_cursor("abc"), None);
        assert_eq!(decode_cursor("6162"), None);
    }
}

#[cfg(test)]
mod document_tests {
    use super::*;

    #[test]
    fn openapi_the_committed_document_is_current() {
        platform::openapi::assert_committed("product", &openapi());
    }

    #[test]
    fn the_documented_limits_are_the_enforced_ones() {
        let document = serde_json::to_value(openapi()).expect("json");
        let parameters = document["paths"]["/products"]["get"]["parameters"]
            .as_array()
            .expect("parameters");
        let limit = parameters
            .iter()
            .find(|parameter| parameter["name"] == "limit")
            .expect("limit");
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(limit["schema"]["maximum"], MAX_PAGE);
    }
}
