//! The order service's reactions: a catalog replica from product snapshots, and order status
//! driven by the inventory, payment and shipping events of the saga, by the customer and by
//! deadlines. [`apply`] is the service's one decide-then-save step: `order_rules` decides,
//! `db` stores.

use std::time::Duration;

use events::Event;
use messaging::outbox::{self, Cause};
use messaging::worker::{PollingWorker, Round};
use messaging::{EventHandler, HandlerError, ReceivedEvent};
use order_rules::{Decision, OrderBook, OrderInput, OrderState};
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
    fn handles(&self, event: &Event) -> bool {
        order_rules::HANDLES.contains(&event.event_type())
    }

    /// The whole batch in a few statements whatever its size: its orders locked and read in id
    /// order (the inventory, payment and shipment topics are handled side by side, so every
    /// transaction locks in that order), their shipments read when the batch reports any, the
    /// events applied in memory ([`OrderBook`]), then the changes stored and the events
    /// published, each with its own lineage. Catalog snapshots are a replica's rows, each its
    /// own upsert.
    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[&ReceivedEvent],
    ) -> Result<(), HandlerError> {
        let mut about = Vec::with_capacity(events.len());
        for received in events {
            if let Event::ProductSnapshot(snapshot) = &received.event {
                db::apply_snapshot(tx, snapshot).await?;
                continue;
            }
            let Some(order_id) = order_rules::order_of(&received.event) else {
                continue;
            };
            let id = Uuid::parse_str(order_id).map_err(|_| {
                HandlerError::Rejected(anyhow::anyhow!("order id {order_id:?} is not a UUID"))
            })?;
            about.push((id, *received));
        }
        if about.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = about.iter().map(|(id, _)| *id).collect();
        let states = db::lock_states(tx, &ids).await?;
        let reporting_shipments: Vec<Uuid> = about
            .iter()
            .filter(|(_, received)| order_rules::shipment_order(&received.event).is_some())
            .map(|(id, _)| *id)
            .collect();
        let shipments = db::shipments_known(tx, &reporting_shipments).await?;
        let mut book = OrderBook::new(states, shipments);
        let mut publish = Vec::new();
        for (id, received) in &about {
            let emitted = book
                .apply(id, &received.event, received.metadata.occurred_at)
                .map_err(|unknown| HandlerError::Rejected(unknown.into()))?;
            let cause = Cause::Event(&received.metadata);
            publish.extend(emitted.into_iter().map(|event| (event, cause)));
        }
        db::store(tx, &book.changes()).await?;
        outbox::publish_caused(tx, &publish).await?;
        Ok(())
    }
}

/// Cancels pending orders past their deadline; returns how many were due.
pub async fn cancel_overdue(pool: &PgPool, limit: i64) -> Result<usize, OrderDbError> {
    if !db::any_overdue(pool).await? {
        return Ok(0);
    }
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
