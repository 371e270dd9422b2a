use std::collections::BTreeMap;

use events::{ProductSnapshot, StockLevelChanged, VariantSnapshot};
use messaging::outbox::{self, Cause};
use serde::Serialize;
use serde_json::Value;
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use crate::domain::ProductDraft;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ProductRow {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub archived: bool,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct VariantRow {
    pub sku: String,
    #[serde(skip)]
    pub product_id: Uuid,
    pub name: String,
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub attributes: Value,
    pub price_minor: i64,
    pub currency: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogWriteError {
    #[error("a product with slug {0:?} already exists")]
    SlugTaken(String),
    #[error("SKU {0:?} belongs to another product")]
    SkuTaken(String),
    #[error("database")]
    Database(#[from] sqlx::Error),
    #[error("outbox")]
    Outbox(#[from] outbox::OutboxError),
}

/// Creates a product, or updates the one with `id` (or, with no id, the one with the draft's
/// slug), replacing its variants, and publishes its new snapshot. Returns the product id.
pub async fn save_product(
    tx: &mut PgConnection,
    id: Option<Uuid>,
    draft: &ProductDraft,
    archived: bool,
) -> Result<Option<Uuid>, CatalogWriteError> {
    let saved: Option<(Uuid,)> = match id {
        Some(id) => sqlx::query_as(
            "UPDATE products SET slug = $2, name = $3, description = $4, archived = $5, updated_at = now()
              WHERE id = $1 RETURNING id",
        )
        .bind(id)
        .bind(&draft.slug)
        .bind(&draft.name)
        .bind(&draft.description)
        .bind(archived)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|error| slug_conflict(error, &draft.slug))?,
        None => Some(
            sqlx::query_as(
                "INSERT INTO products (id, slug, name, description, archived) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (slug) DO UPDATE
                    SET name = EXCLUDED.name, description = EXCLUDED.description,
                        archived = EXCLUDED.archived, updated_at = now()
                 RETURNING id",
            )
            .bind(Uuid::now_v7())
            .bind(&draft.slug)
            .bind(&draft.name)
            .bind(&draft.description)
            .bind(archived)
            .fetch_one(&mut *tx)
            .await?,
        ),
    };
    let Some((id,)) = saved else {
        return Ok(None);
    };
    let skus: Vec<&str> = draft.variants.iter().map(|v| v.sku.as_str()).collect();
    let foreign: Option<(String,)> =
        sqlx::query_as("SELECT sku FROM variants WHERE sku = ANY($1) AND product_id <> $2 LIMIT 1")
            .bind(&skus)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((sku,)) = foreign {
        return Err(CatalogWriteError::SkuTaken(sku));
    }
    sqlx::query("DELETE FROM variants WHERE product_id = $1 AND NOT (sku = ANY($2))")
        .bind(id)
        .bind(&skus)
        .execute(&mut *tx)
        .await?;
    for (position, variant) in draft.variants.iter().enumerate() {
        sqlx::query(
            "INSERT INTO variants (sku, product_id, name, attributes, price_minor, currency, position)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (sku) DO UPDATE
                SET name = EXCLUDED.name, attributes = EXCLUDED.attributes,
                    price_minor = EXCLUDED.price_minor, currency = EXCLUDED.currency,
                    position = EXCLUDED.position",
        )
        .bind(&variant.sku)
        .bind(id)
        .bind(&variant.name)
        .bind(sqlx::types::Json(&variant.attributes))
        .bind(variant.price_minor)
        .bind(variant.currency.as_str())
        .bind(i32::try_from(position).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
    }
    publish_snapshot(tx, id).await?;
    Ok(Some(id))
}

fn slug_conflict(error: sqlx::Error, slug: &str) -> CatalogWriteError {
    match error.as_database_error().and_then(|e| e.code()) {
        Some(code) if code == "23505" => CatalogWriteError::SlugTaken(slug.to_owned()),
        _ => CatalogWriteError::Database(error),
    }
}

/// Publishes the full current state of a product, so replicas need nothing else.
async fn publish_snapshot(tx: &mut PgConnection, id: Uuid) -> Result<(), CatalogWriteError> {
    let product = sqlx::query_as::<Postgres, ProductRow>(
        "SELECT id, slug, name, description, archived FROM products WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let variants = sqlx::query_as::<Postgres, VariantRow>(
        "SELECT sku, product_id, name, attributes, price_minor, currency
           FROM variants WHERE product_id = $1 ORDER BY position, sku",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let snapshot = ProductSnapshot {
        product_id: product.id.to_string(),
        slug: product.slug,
        name: product.name,
        description: product.description,
        archived: product.archived,
        variants: variants
            .into_iter()
            .map(|variant| VariantSnapshot {
                sku: variant.sku,
                name: variant.name,
                attributes: serde_json::from_value::<BTreeMap<String, String>>(variant.attributes)
                    .unwrap_or_default(),
                price_minor: variant.price_minor,
                currency: variant.currency,
            })
            .collect(),
    };
    outbox::publish(tx, &snapshot.into(), Cause::SERVICE).await?;
    Ok(())
}

/// One page of the catalog, ordered by name: products after `after` (name, id) whose name or
/// description contains `text` and, with `min_available`, that have a variant with at least that
/// many units available.
pub async fn list_products(
    pool: &PgPool,
    text: Option<&str>,
    after: Option<(String, Uuid)>,
    min_available: Option<i64>,
    limit: i64,
) -> Result<Vec<ProductRow>, sqlx::Error> {
    let pattern = text.map(|text| {
        let escaped = text
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    let (after_name, after_id) = after.unzip();
    sqlx::query_as::<Postgres, ProductRow>(
        "SELECT id, slug, name, description, archived FROM products
          WHERE NOT archived
            AND ($1::text IS NULL OR name ILIKE $1 OR description ILIKE $1)
            AND ($2::text IS NULL OR (name, id) > ($2, $3))
            AND ($4::bigint IS NULL OR EXISTS (
                    SELECT 1 FROM variants JOIN stock_levels USING (sku)
                     WHERE variants.product_id = products.id AND available >= $4))
          ORDER BY name, id
          LIMIT $5",
    )
    .bind(pattern)
    .bind(after_name)
    .bind(after_id)
    .bind(min_available)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn find_product(pool: &PgPool, id: Uuid) -> Result<Option<ProductRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, ProductRow>(
        "SELECT id, slug, name, description, archived FROM products WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// A variant as the catalog lists it, with the units its SKU has available as inventory last
/// published them (`None`: no level heard yet).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ListedVariant {
    #[sqlx(flatten)]
    pub variant: VariantRow,
    pub available: Option<i64>,
}

/// The variants of `product_ids` with their stock; with `min_available`, only those with at
/// least that many units available.
pub async fn variants_of(
    pool: &PgPool,
    product_ids: &[Uuid],
    min_available: Option<i64>,
) -> Result<Vec<ListedVariant>, sqlx::Error> {
    sqlx::query_as::<Postgres, ListedVariant>(
        "SELECT sku, product_id, name, attributes, price_minor, currency, available
           FROM variants LEFT JOIN stock_levels USING (sku)
          WHERE product_id = ANY($1) AND ($2::bigint IS NULL OR available >= $2)
          ORDER BY product_id, position",
    )
    .bind(product_ids)
    .bind(min_available)
    .fetch_all(pool)
    .await
}

/// Stores the latest levels of SKUs from inventory's `stock-levels` topic, in one statement.
/// Each SKU's levels arrive in the order inventory committed them (one key, one partition),
/// and the inbox drops redeliveries, so the last one of each SKU in `levels` is its current
/// one; the earlier ones are passed over (a statement may write a row only once).
pub async fn save_stock_levels(
    tx: &mut PgConnection,
    levels: &[&StockLevelChanged],
) -> Result<(), sqlx::Error> {
    let mut latest: Vec<&StockLevelChanged> = Vec::with_capacity(levels.len());
    for level in levels {
        match latest.iter_mut().find(|kept| kept.sku == level.sku) {
            Some(kept) => *kept = level,
            None => latest.push(level),
        }
    }
    if latest.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO stock_levels (sku, on_hand, reserved)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
         ON CONFLICT (sku) DO UPDATE
            SET on_hand = EXCLUDED.on_hand, reserved = EXCLUDED.reserved, updated_at = now()",
    )
    .bind(
        latest
            .iter()
            .map(|level| level.sku.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(latest.iter().map(|level| level.on_hand).collect::<Vec<_>>())
    .bind(
        latest
            .iter()
            .map(|level| level.reserved)
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}
