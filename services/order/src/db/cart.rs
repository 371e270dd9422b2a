//! Carts: what each customer is about to buy, priced from the catalog replica.

use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use super::OrderDbError;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CartLine {
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
    pub currency: String,
    pub available: bool,
}

pub async fn cart<'c>(
    db: impl sqlx::PgExecutor<'c>,
    user_id: Uuid,
) -> Result<Vec<CartLine>, sqlx::Error> {
    sqlx::query_as::<Postgres, CartLine>(
        "SELECT c.sku, r.product_name || ' – ' || r.variant_name AS name, c.quantity,
                r.price_minor AS unit_price_minor, r.currency, r.available
           FROM cart_items c JOIN catalog_replica r ON r.sku = c.sku
          WHERE c.user_id = $1 ORDER BY c.added_at, c.sku",
    )
    .bind(user_id)
    .fetch_all(db)
    .await
}

pub async fn set_cart_item(
    pool: &PgPool,
    user_id: Uuid,
    sku: &str,
    quantity: i32,
) -> Result<(), OrderDbError> {
    let known: Option<(bool,)> =
        sqlx::query_as("SELECT available FROM catalog_replica WHERE sku = $1")
            .bind(sku)
            .fetch_optional(pool)
            .await?;
    if !known.is_some_and(|(available,)| available) {
        return Err(OrderDbError::UnknownSku {
            sku: sku.to_owned(),
        });
    }
    sqlx::query(
        "INSERT INTO cart_items (user_id, sku, quantity) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, sku) DO UPDATE SET quantity = EXCLUDED.quantity",
    )
    .bind(user_id)
    .bind(sku)
    .bind(quantity)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn remove_cart_item(
    pool: &PgPool,
    user_id: Uuid,
    sku: &str,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM cart_items WHERE user_id = $1 AND sku = $2")
            .bind(user_id)
            .bind(sku)
            .execute(pool)
            .await?
            .rows_affected()
            > 0,
    )
}

pub async fn clear_cart(tx: &mut PgConnection, user_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM cart_items WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
