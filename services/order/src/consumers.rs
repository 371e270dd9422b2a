//! The order service's reactions: a catalog replica from product snapshots, and order status
//! driven by the inventory, payment and shipping events of the saga, by the customer and by
//! deadlines. [`apply`] is the service's one decide-then-save step: `order_rules` decides,
//! `db` stores.

use std::time::Duration;

use events::Event;
use messaging::outbox::Cause;
use messaging::worker::{PollingWorker, Round};
use messaging::{EventHandler, HandlerError, ReceivedEvent};
use order_rules::{Decision, OrderInput, OrderState};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::db::{self, NewOrder, OrderDbError};

/// Topics the order service consumes: declared with its rules.
pub const TOPICS: &[&str] = order_rules::SUBSCRIPTIONS;

/// Applies an input to a locked order in `state`: the rules decide, the decision is stored with
/// the events it publishes, in the caller's transaction.
pub async fn apply(
    tx: &mut PgConnection,
    id: Uuid,
    state: &OrderState,
    input: &OrderInput,
    cause: Cause<'_>,
) -> Result<Decision, OrderDbError> {
    let decision = order_rules::decide(&id.to_string(), state, input);
    db::save(tx, id, state, &decision, cause).await?;
    Ok(decision)
}

/// Places a checkout: the order starts pending and publishes its OrderCreated, in the caller's
/// transaction. Returns the new order's id.
pub async fn place(
    tx: &mut PgConnection,
    order: &NewOrder,
    cause: Cause<'_>,
) -> Result<Uuid, OrderDbError> {
    let id = Uuid::now_v7();
    let created = order
        .checkout
        .created(&id.to_string(), &order.user_id.to_string());
    db::insert_order(tx, id, order, &OrderState::pending(), &[created], cause).await?;
    Ok(id)
}

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
            .filter_map(|received| order_rules::order_of(&received.event))
            // A malformed id is the handler's to reject.
            .filter_map(|order_id| Uuid::parse_str(order_id).ok())
            .collect();
        Ok(db::lock_orders(tx, &ids).await?)
    }

    fn handles(&self, event: &Event) -> bool {
        order_rules::HANDLES.contains(&event.event_type())
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        received: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let event = &received.event;
        if let Event::ProductSnapshot(snapshot) = event {
            return Ok(db::apply_snapshot(tx, snapshot).await?);
        }
        let Some(order_id) = order_rules::order_of(event) else {
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
        if order_rules::shipment_order(event).is_some() {
            let current = db::shipment(tx, id).await?;
            let at = received.metadata.occurred_at;
            if let Some(next) = order_rules::track_shipment(current.as_ref(), event, at) {
                db::save_shipment(tx, id, &next).await?;
            }
        }
        let Some((_, input)) = OrderInput::from_event(event) else {
            return Ok(());
        };
        apply(tx, id, &state, &input, Cause::Event(&received.metadata))
            .await
            .map_err(HandlerError::classify)?;
        Ok(())
    }
}

/// Cancels pending orders past their deadline; returns how many were due.
pub async fn cancel_overdue(pool: &PgPool, limit: i64) -> Result<usize, OrderDbError> {
    let mut tx = pool.begin().await?;
    let due = db::overdue(&mut tx, limit).await?;
    for id in &due {
        if let Some((_, state)) = db::lock_order(&mut tx, *id).await? {
            apply(
                &mut tx,
                *id,
                &state,
                &OrderInput::DeadlinePassed,
                Cause::SERVICE,
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(due.len())
}

/// Cancels orders still pending after their deadline, until shutdown.
pub async fn enforce_deadlines(
    pool: PgPool,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    const BATCH: i64 = 100;
    let worker = PollingWorker::new("order deadlines", interval);
    worker
        .run(pool.clone(), shutdown, || async {
            cancel_overdue(&pool, BATCH)
                .await
                .map(|done| Round::of(done, BATCH))
        })
        .await
}

/// Publishes `orders_past_deadline` (orders not final a minute after their deadline) every
/// `interval`, until shutdown: one statement per round on two partial indexes, whatever the load.
pub async fn report_past_deadline(
    pool: PgPool,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    const GRACE_SECS: f64 = 60.0;
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = timer.tick() => match db::past_deadline(&pool, GRACE_SECS).await {
                Ok(count) => metrics::gauge!("orders_past_deadline").set(count as f64),
                Err(error) => tracing::warn!(%error, "counting orders past their deadline"),
            },
        }
    }
}
