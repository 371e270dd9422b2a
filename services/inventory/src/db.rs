use sqlx::migrate::Migrator;
use sqlx::{PgPool, Postgres, Transaction};

use crate::domain::StockLevel;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Sets the on-hand quantity of a SKU, keeping its reservations.
pub async fn set_on_hand(
    tx: &mut Transaction<'_, Postgres>,
    sku: &str,
    on_hand: i64,
) -> Result<StockLevel, sqlx::Error> {
    sqlx::query_as::<Postgres, StockLevel>(
        "INSERT INTO stock (sku, on_hand) VALUES ($1, $2)
         ON CONFLICT (sku) DO UPDATE SET on_hand = EXCLUDED.on_hand, updated_at = now()
         RETURNING sku, on_hand, reserved",
    )
    .bind(sku)
    .bind(on_hand)
    .fetch_one(&mut **tx)
    .await
}

pub async fn stock_level(pool: &PgPool, sku: &str) -> Result<Option<StockLevel>, sqlx::Error> {
    sqlx::query_as::<Postgres, StockLevel>(
        "SELECT sku, on_hand, reserved FROM stock WHERE sku = $1",
    )
    .bind(sku)
    .fetch_optional(pool)
    .await
}
