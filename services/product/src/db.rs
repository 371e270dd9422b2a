use serde::Serialize;
use serde_json::Value;
use sqlx::migrate::Migrator;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::domain::ProductDraft;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ProductRow {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct VariantRow {
    pub sku: String,
    #[serde(skip)]
    pub product_id: Uuid,
    pub name: String,
    pub attributes: Value,
    pub price_minor: i64,
    pub currency: String,
}

/// Inserts or updates a product by slug, with its variants by SKU. Returns the product id.
pub async fn upsert_product(
    tx: &mut Transaction<'_, Postgres>,
    draft: &ProductDraft,
) -> Result<Uuid, sqlx::Error> {
    let (id,): (Uuid,) = sqlx::query_as(
        "INSERT INTO products (id, slug, name, description) VALUES ($1, $2, $3, $4)
         ON CONFLICT (slug) DO UPDATE
            SET name = EXCLUDED.name, description = EXCLUDED.description, updated_at = now()
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(&draft.slug)
    .bind(&draft.name)
    .bind(&draft.description)
    .fetch_one(&mut **tx)
    .await?;
    for (position, variant) in draft.variants.iter().enumerate() {
        sqlx::query(
            "INSERT INTO variants (sku, product_id, name, attributes, price_minor, currency, position)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (sku) DO UPDATE
                SET product_id = EXCLUDED.product_id, name = EXCLUDED.name,
                    attributes = EXCLUDED.attributes, price_minor = EXCLUDED.price_minor,
                    currency = EXCLUDED.currency, position = EXCLUDED.position",
        )
        .bind(&variant.sku)
        .bind(id)
        .bind(&variant.name)
        .bind(sqlx::types::Json(&variant.attributes))
        .bind(variant.price_minor)
        .bind(variant.currency.as_str())
        .bind(i32::try_from(position).unwrap_or(i32::MAX))
        .execute(&mut **tx)
        .await?;
    }
    Ok(id)
}

pub async fn list_products(pool: &PgPool) -> Result<Vec<ProductRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, ProductRow>(
        "SELECT id, slug, name, description FROM products WHERE NOT archived ORDER BY name, id",
    )
    .fetch_all(pool)
    .await
}

pub async fn find_product(pool: &PgPool, id: Uuid) -> Result<Option<ProductRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, ProductRow>(
        "SELECT id, slug, name, description FROM products WHERE id = $1 AND NOT archived",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub async fn variants_of(
    pool: &PgPool,
    product_ids: &[Uuid],
) -> Result<Vec<VariantRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, VariantRow>(
        "SELECT sku, product_id, name, attributes, price_minor, currency
           FROM variants WHERE product_id = ANY($1) ORDER BY product_id, position",
    )
    .bind(product_ids)
    .fetch_all(pool)
    .await
}
