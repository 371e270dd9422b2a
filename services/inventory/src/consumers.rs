//! The inventory service's reactions to the checkout saga.

use std::time::Duration;

use chrono::Utc;
use events::Event;
use messaging::{EventHandler, HandlerError, ReceivedEvent};
use sqlx::PgConnection;

use messaging::outbox::Cause;
use messaging::worker::{PollingWorker, Round};

use crate::db;
use crate::domain::{Requested, ReservationInput};

/// Topics the inventory service consumes.
pub const TOPICS: &[&str] = &["order-events", "payment-events"];

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
            match &received.event {
                Event::OrderCreated(order) => {
                    skus.extend(order.lines.iter().map(|line| line.sku.as_str()));
                }
                Event::PaymentSucceeded(paid) => orders.push(paid.order_id.as_str()),
                Event::PaymentFailed(failed) => orders.push(failed.order_id.as_str()),
                Event::OrderCancelled(cancelled) => orders.push(cancelled.order_id.as_str()),
                _ => {}
            }
        }
        Ok(db::lock_stock(tx, &skus, &orders).await?)
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        received: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let cause = Cause::Event(&received.metadata);
        let outcome = match &received.event {
            Event::OrderCreated(order) => {
                let lines: Vec<Requested> = order
                    .lines
                    .iter()
                    .map(|line| Requested {
                        sku: line.sku.clone(),
                        quantity: i64::from(line.quantity),
                    })
                    .collect();
                let ttl = chrono::Duration::from_std(self.reservation_ttl).unwrap_or_default();
                db::reserve_order(tx, &order.order_id, &lines, Utc::now() + ttl, cause)
                    .await
                    .map(drop)
            }
            Event::PaymentSucceeded(paid) => {
                db::apply_to_reservation(
                    tx,
                    &paid.order_id,
                    ReservationInput::PaymentSucceeded,
                    cause,
                )
                .await
            }
            Event::PaymentFailed(failed) => {
                db::apply_to_reservation(
                    tx,
                    &failed.order_id,
                    ReservationInput::PaymentFailed,
                    cause,
                )
                .await
            }
            Event::OrderCancelled(cancelled) => {
                db::apply_to_reservation(
                    tx,
                    &cancelled.order_id,
                    ReservationInput::OrderCancelled,
                    cause,
                )
                .await
            }
            _ => Ok(()),
        };
        outcome.map_err(HandlerError::classify)
    }
}

/// Releases reservations whose time ran out, until shutdown.
pub async fn expire_reservations(
    pool: sqlx::PgPool,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    const BATCH: i64 = 100;
    let worker = PollingWorker::new("reservation expiry", interval);
    worker
        .run(pool.clone(), shutdown, || async {
            db::expire_due_reservations(&pool, BATCH)
                .await
                .map(|done| Round::of(done, BATCH))
        })
        .await
}
