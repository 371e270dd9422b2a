//! The inventory service's reactions to the checkout saga, its expiry worker, and stock set by
//! hand. Each is one decide-then-save step: `inventory_rules` decides, `db` stores.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use events::Event;
use inventory_rules::{Books, InventoryInput, ReservationInput, StockLevel};
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

impl InventoryHandler {
    /// When a reservation made now expires.
    fn expires_at(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(self.reservation_ttl).unwrap_or_default()
    }
}

impl EventHandler for InventoryHandler {
    fn handles(&self, event: &Event) -> bool {
        inventory_rules::HANDLES.contains(&event.event_type())
    }

    /// The whole batch in four statements whatever its size: its reservations locked and
    /// read, then its stock rows in SKU order, the events applied in memory ([`Books`]), then
    /// what changed saved in one statement and what they publish in another.
    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[&ReceivedEvent],
    ) -> Result<(), HandlerError> {
        let inputs: Vec<(&str, InventoryInput, Cause<'_>)> = events
            .iter()
            .filter_map(|received| {
                let (order_id, input) = inventory_rules::input_of(&received.event)?;
                Some((order_id, input, Cause::Event(&received.metadata)))
            })
            .collect();
        settle(tx, &inputs, self.expires_at())
            .await
            .map_err(HandlerError::classify)
    }
}

/// Applies `inputs` in their order, each order's new reservation expiring at `expires_at`:
/// locks what they touch (their reservations in order id order, then the stock rows of those
/// and of the lines asked for, in SKU order: every transaction locks in that order, so none
/// waits on another in a circle), lets `inventory_rules` decide each in turn, then stores the
/// changes and publishes each input's events with its own lineage.
pub async fn settle(
    tx: &mut PgConnection,
    inputs: &[(&str, InventoryInput, Cause<'_>)],
    expires_at: DateTime<Utc>,
) -> Result<(), StockError> {
    if inputs.is_empty() {
        return Ok(());
    }
    let orders: Vec<&str> = inputs.iter().map(|(order_id, _, _)| *order_id).collect();
    let held = db::lock_reservations(tx, &orders).await?;
    let mut skus: BTreeSet<&str> = held
        .values()
        .flat_map(|held| held.lines.iter().map(|line| line.sku.as_str()))
        .collect();
    for (_, input, _) in inputs {
        if let InventoryInput::OrderCreated(lines) = input {
            skus.extend(lines.iter().map(|line| line.sku.as_str()));
        }
    }
    let skus: Vec<&str> = skus.into_iter().collect();
    let levels = db::lock_levels(tx, &skus).await?;
    let mut books = Books::new(levels, held);
    let mut publish = Vec::new();
    for (order_id, input, cause) in inputs {
        for event in books.apply(order_id, input, expires_at.timestamp_millis())? {
            publish.push((event, *cause));
        }
    }
    db::save(tx, &books.changes()).await?;
    outbox::publish_caused(tx, &publish).await?;
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
    if !db::any_due_reservation(pool).await? {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    let due = db::due_reservations(&mut tx, limit).await?;
    let inputs: Vec<(&str, InventoryInput, Cause<'_>)> = due
        .iter()
        .map(|order_id| {
            (
                order_id.as_str(),
                InventoryInput::Reservation(ReservationInput::TimeRanOut),
                Cause::SERVICE,
            )
        })
        .collect();
    settle(&mut tx, &inputs, Utc::now()).await?;
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
