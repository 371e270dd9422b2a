//! The inventory service's reactions to the checkout saga, its expiry worker, and stock set by
//! hand. Each is one decide-then-save step: `inventory_rules` decides, `db` stores.

use std::time::Duration;

use chrono::{DateTime, Utc};
use events::Event;
use inventory_rules::{InventoryInput, Requested, Reservation, ReservationInput, StockLevel};
use messaging::outbox::{self, Cause};
use messaging::worker::{PollingWorker, Round};
use messaging::{EventHandler, HandlerError, ReceivedEvent};
use sqlx::{PgConnection, PgPool};

use crate::db::{self, StockError};

/// Topics the inventory service consumes: declared with its rules.
pub const TOPICS: &[&str] = inventory_rules::SUBSCRIPTIONS;

#[derive(Debug)]
pub struct InventoryHandler {
    pub reservation_ttl: Duration,
}

impl EventHandler for InventoryHandler {
    /// Locks every stock row the batch will move, in SKU order. Each order's reservation locks
    /// its SKUs in order, but a batch holds them from one order to the next: without this, two
    /// batches sharing a popular SKU would deadlock.
    async fn prepare(
        &self,
        tx: &mut PgConnection,
        events: &[&ReceivedEvent],
    ) -> Result<(), HandlerError> {
        let mut skus = Vec::new();
        let mut orders = Vec::new();
        for received in events {
            if let Event::OrderCreated(order) = &received.event {
                skus.extend(order.lines.iter().map(|line| line.sku.as_str()));
            } else if let Some((order_id, InventoryInput::Reservation(_))) =
                inventory_rules::input_of(&received.event)
            {
                orders.push(order_id);
            }
        }
        Ok(db::lock_stock(tx, &skus, &orders).await?)
    }

    fn handles(&self, event: &Event) -> bool {
        inventory_rules::HANDLES.contains(&event.event_type())
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        received: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let Some((order_id, input)) = inventory_rules::input_of(&received.event) else {
            return Ok(());
        };
        let cause = Cause::Event(&received.metadata);
        let outcome = match input {
            InventoryInput::OrderCreated(lines) => {
                let ttl = chrono::Duration::from_std(self.reservation_ttl).unwrap_or_default();
                reserve(tx, order_id, &lines, Utc::now() + ttl, cause)
                    .await
                    .map(drop)
            }
            InventoryInput::Reservation(input) => apply(tx, order_id, input, cause).await,
        };
        outcome.map_err(HandlerError::classify)
    }
}

/// Decides an order's reservation, all or nothing, and publishes the outcome; `None` when the
/// order was decided already.
pub async fn reserve(
    tx: &mut PgConnection,
    order_id: &str,
    lines: &[Requested],
    expires_at: DateTime<Utc>,
    cause: Cause<'_>,
) -> Result<Option<Reservation>, StockError> {
    let decided = db::has_reservation(tx, order_id).await?;
    let levels = if decided {
        Default::default()
    } else {
        db::lock_levels(tx, lines).await?
    };
    let Some((reservation, event)) = inventory_rules::on_order_created(
        order_id,
        decided,
        &levels,
        lines,
        expires_at.timestamp_millis(),
    ) else {
        return Ok(None);
    };
    let mut emit = Vec::new();
    if let Reservation::Granted(granted) = &reservation {
        db::insert_reservation(tx, order_id, granted, expires_at).await?;
        for line in granted {
            let level = db::move_stock(tx, line, inventory_rules::StockMovement::Reserve).await?;
            emit.push(level.changed());
        }
    }
    emit.push(event);
    outbox::publish_all(tx, &emit, cause).await?;
    Ok(Some(reservation))
}

/// Applies a payment outcome, a cancellation or expiry to an order's reservation.
pub async fn apply(
    tx: &mut PgConnection,
    order_id: &str,
    input: ReservationInput,
    cause: Cause<'_>,
) -> Result<(), StockError> {
    let (status, lines) = match db::lock_reservation(tx, order_id).await? {
        Some((status, lines)) => (Some(status), lines),
        None => (None, Vec::new()),
    };
    let Some(decision) = inventory_rules::react(order_id, status, input) else {
        return Ok(());
    };
    let mut emit = Vec::new();
    if let Some(movement) = decision.movement {
        for line in &lines {
            emit.push(db::move_stock(tx, line, movement).await?.changed());
        }
    }
    if Some(decision.status) != status {
        db::set_reservation_status(tx, order_id, decision.status).await?;
    }
    emit.extend(decision.emit);
    outbox::publish_all(tx, &emit, cause).await?;
    Ok(())
}

/// Sets the on-hand stock of a SKU by hand (an admin, the demo data), keeping what is reserved,
/// and publishes the new level.
pub async fn set_on_hand(
    tx: &mut PgConnection,
    sku: &str,
    on_hand: i64,
) -> Result<StockLevel, StockError> {
    let current = db::lock_level(tx, sku).await?;
    let level = inventory_rules::set_on_hand(current.as_ref(), sku, on_hand)?;
    db::store_on_hand(tx, &level, Cause::SERVICE).await
}

/// Releases reservations past their time, oldest first; returns how many were due.
pub async fn expire_due_reservations(pool: &PgPool, limit: i64) -> Result<usize, StockError> {
    let mut tx = pool.begin().await?;
    let due = db::due_reservations(&mut tx, limit).await?;
    for order_id in &due {
        apply(
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

/// Releases reservations whose time ran out, until shutdown.
pub async fn expire_reservations(
    pool: PgPool,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    const BATCH: i64 = 100;
    let worker = PollingWorker::new("reservation expiry", interval);
    worker
        .run(pool.clone(), shutdown, || async {
            expire_due_reservations(&pool, BATCH)
                .await
                .map(|done| Round::of(done, BATCH))
        })
        .await
}
