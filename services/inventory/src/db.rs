use std::collections::HashMap;

use chrono::{DateTime, Utc};
use events::StockLevelChanged;
use messaging::outbox::{self, Cause};
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool, Postgres};

use crate::domain::{
    self, Requested, Reservation, ReservationInput, ReservationStatus, StockLevel, StockMovement,
};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

async fn publish_level(
    tx: &mut PgConnection,
    level: &StockLevel,
    cause: Cause<'_>,
) -> Result<(), outbox::OutboxError> {
    let event = StockLevelChanged {
        sku: level.sku.clone(),
        on_hand: level.on_hand,
        reserved: level.reserved,
    }
    .into();
    outbox::publish(tx, &event, cause).await
}

#[derive(Debug, thiserror::Error)]
pub enum StockError {
    #[error("on hand cannot go below the {reserved} units reserved")]
    BelowReserved { reserved: i64 },
    #[error("on hand must not be negative")]
    Negative,
    #[error("database")]
    Database(#[from] sqlx::Error),
    #[error("outbox")]
    Outbox(#[from] outbox::OutboxError),
}

/// Sets the on-hand quantity of a SKU (creating it), keeping its reservations, and publishes
/// the new level.
pub async fn set_on_hand(
    tx: &mut PgConnection,
    sku: &str,
    on_hand: i64,
) -> Result<StockLevel, StockError> {
    if on_hand < 0 {
        return Err(StockError::Negative);
    }
    let current: Option<(i64,)> =
        sqlx::query_as("SELECT reserved FROM stock WHERE sku = $1 FOR UPDATE")
            .bind(sku)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((reserved,)) = current
        && on_hand < reserved
    {
        return Err(StockError::BelowReserved { reserved });
    }
    let level = sqlx::query_as::<Postgres, StockLevel>(
        "INSERT INTO stock (sku, on_hand) VALUES ($1, $2)
         ON CONFLICT (sku) DO UPDATE SET on_hand = EXCLUDED.on_hand, updated_at = now()
         RETURNING sku, on_hand, reserved",
    )
    .bind(sku)
    .bind(on_hand)
    .fetch_one(&mut *tx)
    .await?;
    publish_level(tx, &level, Cause::SERVICE).await?;
    Ok(level)
}

pub async fn stock_level(pool: &PgPool, sku: &str) -> Result<Option<StockLevel>, sqlx::Error> {
    sqlx::query_as::<Postgres, StockLevel>(
        "SELECT sku, on_hand, reserved FROM stock WHERE sku = $1",
    )
    .bind(sku)
    .fetch_optional(pool)
    .await
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

/// Reserves an order's lines all or nothing and publishes the outcome. The stock rows are
/// locked in SKU order, so concurrent orders cannot deadlock, and the table's CHECK makes
/// overselling impossible even if this code were wrong.
pub async fn reserve_order(
    tx: &mut PgConnection,
    order_id: &str,
    lines: &[Requested],
    expires_at: DateTime<Utc>,
    cause: Cause<'_>,
) -> Result<Reservation, StockError> {
    let exists: Option<(String,)> =
        sqlx::query_as("SELECT status FROM reservations WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_some() {
        // Already decided for this order (a replay under a new event id): decide nothing twice.
        return Ok(Reservation::Granted(Vec::new()));
    }
    let mut skus: Vec<&str> = lines.iter().map(|line| line.sku.as_str()).collect();
    skus.sort_unstable();
    skus.dedup();
    let locked = sqlx::query_as::<Postgres, StockLevel>(
        "SELECT sku, on_hand, reserved FROM stock WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
    )
    .bind(&skus)
    .fetch_all(&mut *tx)
    .await?;
    let levels: HashMap<String, StockLevel> = locked
        .into_iter()
        .map(|level| (level.sku.clone(), level))
        .collect();
    let reservation = domain::reserve(&levels, lines);
    if let Reservation::Granted(granted) = &reservation {
        sqlx::query(
            "INSERT INTO reservations (order_id, status, expires_at) VALUES ($1, 'reserved', $2)",
        )
        .bind(order_id)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        for line in granted {
            sqlx::query(
                "INSERT INTO reservation_lines (order_id, sku, quantity) VALUES ($1, $2, $3)",
            )
            .bind(order_id)
            .bind(&line.sku)
            .bind(line.quantity)
            .execute(&mut *tx)
            .await?;
            let level = sqlx::query_as::<Postgres, StockLevel>(
                "UPDATE stock SET reserved = reserved + $2, updated_at = now() WHERE sku = $1
                 RETURNING sku, on_hand, reserved",
            )
            .bind(&line.sku)
            .bind(line.quantity)
            .fetch_one(&mut *tx)
            .await?;
            publish_level(tx, &level, cause).await?;
        }
    }
    outbox::publish(
        tx,
        &domain::reservation_event(order_id, &reservation, expires_at.timestamp_millis()),
        cause,
    )
    .await?;
    Ok(reservation)
}

/// Applies a payment outcome, a cancellation or expiry to an order's reservation.
pub async fn apply_to_reservation(
    tx: &mut PgConnection,
    order_id: &str,
    input: ReservationInput,
    cause: Cause<'_>,
) -> Result<(), StockError> {
    let current: Option<(String,)> =
        sqlx::query_as("SELECT status FROM reservations WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?;
    // No reservation: the order was refused for lack of stock; there is nothing to undo.
    let Some(status) = current.and_then(|(status,)| ReservationStatus::parse(&status)) else {
        return Ok(());
    };
    let decision = domain::decide(order_id, status, input);
    if let Some(movement) = decision.movement {
        let lines: Vec<(String, i64)> = sqlx::query_as(
            "SELECT sku, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY sku",
        )
        .bind(order_id)
        .fetch_all(&mut *tx)
        .await?;
        for (sku, quantity) in lines {
            let statement = match movement {
                StockMovement::Commit => {
                    "UPDATE stock SET reserved = reserved - $2, on_hand = on_hand - $2, updated_at = now()
                      WHERE sku = $1 RETURNING sku, on_hand, reserved"
                }
                StockMovement::Release => {
                    "UPDATE stock SET reserved = reserved - $2, updated_at = now()
                      WHERE sku = $1 RETURNING sku, on_hand, reserved"
                }
                StockMovement::Restock => {
                    "UPDATE stock SET on_hand = on_hand + $2, updated_at = now()
                      WHERE sku = $1 RETURNING sku, on_hand, reserved"
                }
            };
            let level = sqlx::query_as::<Postgres, StockLevel>(statement)
                .bind(&sku)
                .bind(quantity)
                .fetch_one(&mut *tx)
                .await?;
            publish_level(tx, &level, cause).await?;
        }
    }
    if decision.status != status {
        sqlx::query("UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = $1")
            .bind(order_id)
            .bind(decision.status.as_str())
            .execute(&mut *tx)
            .await?;
    }
    if let Some(event) = &decision.emit {
        outbox::publish(tx, event, cause).await?;
    }
    Ok(())
}

/// Releases reservations past their time, oldest first; returns how many.
pub async fn expire_due_reservations(pool: &PgPool, limit: i64) -> Result<usize, StockError> {
    let mut tx = pool.begin().await?;
    // SKIP LOCKED: several instances share the queue without waiting on each other.
    let due: Vec<(String,)> = sqlx::query_as(
        "SELECT order_id FROM reservations
          WHERE status = 'reserved' AND expires_at <= now()
          ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    for (order_id,) in &due {
        apply_to_reservation(
            &mut tx,
            order_id,
            ReservationInput::TimeRanOut,
            Cause::SERVICE,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(due.len())
}
