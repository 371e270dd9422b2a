//! The inventory database: stock levels and reservations. Loading and storing only: what changes
//! is decided by `inventory_rules`, in `crate::consumers`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use inventory_rules::{
    Changes, Held, NeverStocked, Requested, ReservationStatus, StockLevel, StockRuleError,
};
use messaging::outbox::{self, Cause};
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool, Postgres};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StockError {
    #[error(transparent)]
    Refused(#[from] StockRuleError),
    #[error(transparent)]
    NeverStocked(#[from] NeverStocked),
    #[error("database")]
    Database(#[from] sqlx::Error),
    #[error("outbox")]
    Outbox(#[from] outbox::OutboxError),
}

#[derive(Debug, sqlx::FromRow)]
struct LevelRow {
    sku: String,
    on_hand: i64,
    reserved: i64,
}

impl From<LevelRow> for StockLevel {
    fn from(row: LevelRow) -> Self {
        Self {
            sku: row.sku,
            on_hand: row.on_hand,
            reserved: row.reserved,
        }
    }
}

/// Publishes a SKU's level on `stock-levels`, in the caller's transaction.
async fn publish_level(
    tx: &mut PgConnection,
    level: &StockLevel,
    cause: Cause<'_>,
) -> Result<(), outbox::OutboxError> {
    outbox::publish(tx, &level.changed(), cause).await
}

/// Locks a SKU's stock row; `None` for a SKU never stocked.
pub async fn lock_level(
    tx: &mut PgConnection,
    sku: &str,
) -> Result<Option<StockLevel>, sqlx::Error> {
    Ok(sqlx::query_as::<Postgres, LevelRow>(
        "SELECT sku, on_hand, reserved FROM stock WHERE sku = $1 FOR UPDATE",
    )
    .bind(sku)
    .fetch_optional(&mut *tx)
    .await?
    .map(StockLevel::from))
}

/// Stores a SKU's on-hand quantity (creating it) and publishes the new level.
pub async fn store_on_hand(
    tx: &mut PgConnection,
    level: &StockLevel,
    cause: Cause<'_>,
) -> Result<StockLevel, StockError> {
    let stored: StockLevel = sqlx::query_as::<Postgres, LevelRow>(
        "INSERT INTO stock (sku, on_hand) VALUES ($1, $2)
         ON CONFLICT (sku) DO UPDATE SET on_hand = EXCLUDED.on_hand, updated_at = now()
         RETURNING sku, on_hand, reserved",
    )
    .bind(&level.sku)
    .bind(level.on_hand)
    .fetch_one(&mut *tx)
    .await?
    .into();
    publish_level(tx, &stored, cause).await?;
    Ok(stored)
}

pub async fn stock_level(pool: &PgPool, sku: &str) -> Result<Option<StockLevel>, sqlx::Error> {
    Ok(sqlx::query_as::<Postgres, LevelRow>(
        "SELECT sku, on_hand, reserved FROM stock WHERE sku = $1",
    )
    .bind(sku)
    .fetch_optional(pool)
    .await?
    .map(StockLevel::from))
}

/// The levels of `skus`, their rows locked in SKU order (so that concurrent transactions
/// cannot deadlock); a SKU never stocked is absent.
pub async fn lock_levels(
    tx: &mut PgConnection,
    skus: &[&str],
) -> Result<Vec<StockLevel>, sqlx::Error> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    let locked = sqlx::query_as::<Postgres, LevelRow>(
        "SELECT sku, on_hand, reserved FROM stock WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
    )
    .bind(skus)
    .fetch_all(&mut *tx)
    .await?;
    Ok(locked.into_iter().map(StockLevel::from).collect())
}

/// The reservations of `orders` that exist, their rows locked in order id order: each one's
/// status and its lines in SKU order, by order id. One statement whatever the number.
pub async fn lock_reservations(
    tx: &mut PgConnection,
    orders: &[&str],
) -> Result<HashMap<String, Held>, sqlx::Error> {
    let rows: Vec<(String, String, Vec<String>, Vec<i64>)> = sqlx::query_as(
        "SELECT r.order_id, r.status,
                ARRAY(SELECT sku FROM reservation_lines l WHERE l.order_id = r.order_id ORDER BY sku),
                ARRAY(SELECT quantity FROM reservation_lines l WHERE l.order_id = r.order_id
                       ORDER BY sku)
           FROM reservations r WHERE r.order_id = ANY($1)
          ORDER BY r.order_id FOR UPDATE OF r",
    )
    .bind(orders)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(order_id, status, skus, quantities)| {
            let lines = skus
                .into_iter()
                .zip(quantities)
                .map(|(sku, quantity)| Requested { sku, quantity })
                .collect();
            let status = ReservationStatus::parse(&status)?;
            Some((order_id, Held { status, lines }))
        })
        .collect())
}

/// Stores what a transaction's events changed, in one statement: new reservations and their
/// lines, the new status of existing ones, and each moved SKU's level. The levels are written
/// as computed from rows this transaction locked; the table's CHECK (`reserved <= on_hand`,
/// nothing negative) still refuses an oversold level even if a rule were wrong.
pub async fn save(tx: &mut PgConnection, changes: &Changes) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let created = &changes.created;
    let expires_at: Vec<DateTime<Utc>> = created
        .iter()
        .map(|new| DateTime::from_timestamp_millis(new.expires_at_ms).unwrap_or_default())
        .collect();
    let lines: Vec<(&str, &Requested)> = created
        .iter()
        .flat_map(|new| new.lines.iter().map(|line| (new.order_id.as_str(), line)))
        .collect();
    sqlx::query(
        "WITH created AS (
             INSERT INTO reservations (order_id, status, expires_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
         ), created_lines AS (
             INSERT INTO reservation_lines (order_id, sku, quantity)
             SELECT * FROM unnest($4::text[], $5::text[], $6::bigint[])
         ), restatused AS (
             UPDATE reservations r SET status = changed.status, updated_at = now()
               FROM unnest($7::text[], $8::text[]) AS changed (order_id, status)
              WHERE r.order_id = changed.order_id
         )
         UPDATE stock s SET on_hand = level.on_hand, reserved = level.reserved, updated_at = now()
           FROM unnest($9::text[], $10::bigint[], $11::bigint[]) AS level (sku, on_hand, reserved)
          WHERE s.sku = level.sku",
    )
    .bind(
        created
            .iter()
            .map(|new| new.order_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        created
            .iter()
            .map(|new| new.status.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(expires_at)
    .bind(
        lines
            .iter()
            .map(|(order_id, _)| *order_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        lines
            .iter()
            .map(|(_, line)| line.sku.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        lines
            .iter()
            .map(|(_, line)| line.quantity)
            .collect::<Vec<_>>(),
    )
    .bind(
        changes
            .statuses
            .iter()
            .map(|(order_id, _)| order_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        changes
            .statuses
            .iter()
            .map(|(_, status)| status.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        changes
            .levels
            .iter()
            .map(|level| level.sku.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        changes
            .levels
            .iter()
            .map(|level| level.on_hand)
            .collect::<Vec<_>>(),
    )
    .bind(
        changes
            .levels
            .iter()
            .map(|level| level.reserved)
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Reservations still held past their time. The status is written into the statement, not
/// bound: the planner then uses the partial index of live reservations by expiry.
fn due_reservations_source() -> String {
    format!(
        "reservations WHERE status = '{}' AND expires_at <= now()",
        ReservationStatus::Reserved.as_str()
    )
}

/// Whether any reservation is past its time (without a transaction).
pub async fn any_due_reservation(pool: &PgPool) -> Result<bool, sqlx::Error> {
    messaging::worker::any_due(pool, &due_reservations_source()).await
}

/// Locks up to `limit` reservations past their time, oldest first; reservations another
/// transaction holds are skipped (several instances share the queue without waiting).
pub async fn due_reservations(
    tx: &mut PgConnection,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let due: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT order_id FROM {} ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        due_reservations_source()
    )))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    Ok(due.into_iter().map(|(order_id,)| order_id).collect())
}
