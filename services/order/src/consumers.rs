//! The order service's reactions: a catalog replica from product snapshots, and order status
//! driven by the inventory, payment and shipping events of the saga.

use std::time::Duration;

use events::Event;
use messaging::{EventHandler, HandlerError, ReceivedEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use messaging::outbox::Cause;
use messaging::worker::{PollingWorker, Round};

use crate::db;
use crate::domain::{self, OrderInput};

/// Topics the order service consumes.
pub const TOPICS: &[&str] = &[
    "product-snapshots",
    "inventory-events",
    "payment-events",
    "shipment-events",
];

#[derive(Debug)]
pub struct OrderHandler;

impl EventHandler for OrderHandler {
    /// Locks every order the batch moves, in id order: the inventory, payment and shipment
    /// topics are handled side by side, and each event locks its order.
    async fn prepare(
        &self,
        tx: &mut PgConnection,
        events: &[&ReceivedEvent],
    ) -> Result<(), HandlerError> {
        let ids: Vec<Uuid> = events
            .iter()
            .filter_map(|received| {
                OrderInput::from_event(&received.event)
                    .map(|(order_id, _)| order_id)
                    .or_else(|| domain::shipment_order(&received.event).map(str::to_owned))
            })
            // A malformed id is the handler's to reject.
            .filter_map(|order_id| Uuid::parse_str(&order_id).ok())
            .collect();
        Ok(db::lock_orders(tx, &ids).await?)
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        received: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        if let Event::ProductSnapshot(snapshot) = &received.event {
            return Ok(db::apply_snapshot(tx, snapshot).await?);
        }
        let input = OrderInput::from_event(&received.event);
        let shipment_order = domain::shipment_order(&received.event);
        let Some(order_id) = input
            .as_ref()
            .map(|(order_id, _)| order_id.as_str())
            .or(shipment_order)
        else {
            return Ok(());
        };
        let id = Uuid::parse_str(order_id).map_err(|_| {
            HandlerError::Rejected(anyhow::anyhow!("order id {order_id:?} is not a UUID"))
        })?;
        let Some((_, state)) = db::lock_order(tx, id).await? else {
            // Events only follow an OrderCreated this service committed first.
            return Err(HandlerError::Rejected(anyhow::anyhow!(
                "unknown order {order_id}"
            )));
        };
        if shipment_order.is_some() {
            db::track_shipment(tx, id, &received.event, received.metadata.occurred_at).await?;
        }
        let Some((_, input)) = input else {
            return Ok(());
        };
        db::apply(tx, id, &state, &input, Cause::Event(&received.metadata))
            .await
            .map_err(HandlerError::classify)?;
        Ok(())
    }
}

/// Cancels orders still pending after their deadline, until shutdown.
pub async fn enforce_deadlines(
    pool: sqlx::PgPool,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    const BATCH: i64 = 100;
    let worker = PollingWorker::new("order deadlines", interval);
    worker
        .run(pool.clone(), shutdown, || async {
            db::cancel_overdue(&pool, BATCH)
                .await
                .map(|done| Round::of(done, BATCH))
        })
        .await
}
