//! The inventory service's reactions to the checkout saga.

use std::time::Duration;

use chrono::Utc;
use events::Event;
use messaging::{EventHandler, HandlerError, ReceivedEvent};
use sqlx::PgConnection;

use messaging::outbox::Cause;

use crate::db::{self, StockError};
use crate::domain::{Requested, ReservationInput};

/// Topics the inventory service consumes.
pub const TOPICS: &[&str] = &["order-events", "payment-events"];

#[derive(Debug)]
pub struct InventoryHandler {
    pub reservation_ttl: Duration,
}

impl EventHandler for InventoryHandler {
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
        outcome.map_err(|error| match error {
            StockError::Database(error) => HandlerError::from(error),
            StockError::Outbox(error) => HandlerError::from(error),
            other => HandlerError::Rejected(other.into()),
        })
    }
}

/// Releases reservations whose time ran out, until shutdown.
pub async fn expire_reservations(
    pool: sqlx::PgPool,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    while !shutdown.is_cancelled() {
        match db::expire_due_reservations(&pool, 100).await {
            Ok(100) => continue,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "expiring reservations failed; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    Ok(())
}
