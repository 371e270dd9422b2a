//! The inventory database: stock levels and reservations. Loading and storing only: what changes
//! is decided by `inventory_rules`, in `crate::consumers`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use inventory_rules::{Requested, ReservationStatus, StockLevel, StockMovement, StockRuleError};
use messaging::outbox::{self, Cause};
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool, Postgres};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StockError {
    #[error(transparent)]
    Refused(#[from] StockRuleError),
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

/// Locks, in SKU order, the stock rows of `skus` and of the reservations of `orders`.
pub async fn lock_stock(
    tx: &mut PgConnection,
    skus: &[&str],
    orders: &[&str],
) -> Result<(), sqlx::Error> {
    if skus.is_empty() && orders.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT sku FROM stock
          WHERE sku = ANY($1)
             OR sku IN (SELECT sku FROM reservation_lines WHERE order_id = ANY($2))
          ORDER BY sku FOR UPDATE",
    )
    .bind(skus)
    .bind(orders)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The levels of the SKUs `lines` ask for, their rows locked in SKU order (so concurrent orders
/// cannot deadlock); a SKU never stocked is absent.
pub async fn lock_levels(
    tx: &mut PgConnection,
    lines: &[Requested],
) -> Result<HashMap<String, StockLevel>, sqlx::Error> {
    let mut skus: Vec<&str> = lines.iter().map(|line| line.sku.as_str()).collect();
    skus.sort_unstable();
    skus.dedup();
    let locked = sqlx::query_as::<Postgres, LevelRow>(
        "SELECT sku, on_hand, reserved FROM stock WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
    )
    .bind(&skus)
    .fetch_all(&mut *tx)
    .await?;
    Ok(locked
        .into_iter()
        .map(|row| (row.sku.clone(), row.into()))
        .collect())
}

/// An order's reservation, its row locked: its status and its lines in SKU order; `None` when
/// the order has none. One statement: each one a consumer's transaction saves is a round trip.
pub async fn lock_reservation(
    tx: &mut PgConnection,
    order_id: &str,
) -> Result<Option<(ReservationStatus, Vec<Requested>)>, sqlx::Error> {
    let current: Option<(String, Vec<String>, Vec<i64>)> = sqlx::query_as(
        "SELECT r.status,
                ARRAY(SELECT sku FROM reservation_lines l WHERE l.order_id = r.order_id ORDER BY sku),
                ARRAY(SELECT quantity FROM reservation_lines l WHERE l.order_id = r.order_id
                       ORDER BY sku)
           FROM reservations r WHERE r.order_id = $1 FOR UPDATE OF r",
    )
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(current.and_then(|(status, skus, quantities)| {
        let lines = skus
            .into_iter()
            .zip(quantities)
            .map(|(sku, quantity)| Requested { sku, quantity })
            .collect();
        ReservationStatus::parse(&status).map(|status| (status, lines))
    }))
}

/// Whether an order was decided already (it has a reservation).
pub async fn has_reservation(tx: &mut PgConnection, order_id: &str) -> Result<bool, sqlx::Error> {
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM reservations WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(exists.is_some())
}

/// Stores a new reservation of `lines` for an order, expiring at `expires_at`, in one statement.
pub async fn insert_reservation(
    tx: &mut PgConnection,
    order_id: &str,
    lines: &[Requested],
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH reservation AS (
             INSERT INTO reservations (order_id, status, expires_at) VALUES ($1, $2, $3)
         )
         INSERT INTO reservation_lines (order_id, sku, quantity)
         SELECT $1, sku, quantity FROM unnest($4::text[], $5::bigint[]) AS line (sku, quantity)",
    )
    .bind(order_id)
    .bind(ReservationStatus::Reserved.as_str())
    .bind(expires_at)
    .bind(
        lines
            .iter()
            .map(|line| line.sku.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(lines.iter().map(|line| line.quantity).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Moves `line`'s units of stock as `movement` says and returns the SKU's new level, which the
/// caller publishes with the rest of its events. The table's CHECK (`reserved <= on_hand`,
/// nothing negative) makes overselling impossible even if a rule were wrong.
pub async fn move_stock(
    tx: &mut PgConnection,
    line: &Requested,
    movement: StockMovement,
) -> Result<StockLevel, StockError> {
    let (on_hand, reserved) = movement.deltas(line.quantity);
    Ok(sqlx::query_as::<Postgres, LevelRow>(
        "UPDATE stock SET on_hand = on_hand + $2, reserved = reserved + $3, updated_at = now()
          WHERE sku = $1 RETURNING sku, on_hand, reserved",
    )
    .bind(&line.sku)
    .bind(on_hand)
    .bind(reserved)
    .fetch_one(&mut *tx)
    .await?
    .into())
}

/// Stores the new status of an order's reservation.
pub async fn set_reservation_status(
    tx: &mut PgConnection,
    order_id: &str,
    status: ReservationStatus,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = $1")
        .bind(order_id)
        .bind(status.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Locks up to `limit` reservations past their time, oldest first; reservations another
/// transaction holds are skipped (several instances share the queue without waiting).
pub async fn due_reservations(
    tx: &mut PgConnection,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    // The status is written into the statement, not bound: the planner then uses the partial
    // index of live reservations by expiry.
    let due: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT order_id FROM reservations
          WHERE status = '{}' AND expires_at <= now()
          ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        ReservationStatus::Reserved.as_str()
    )))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    Ok(due.into_iter().map(|(order_id,)| order_id).collect())
}
