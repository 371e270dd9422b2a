//! Orders: their lines, their saga state and status history, and the queries that show them.

use chrono::{DateTime, Utc};
use events::{Event, PostalAddress};
use messaging::outbox::{self, Cause};
use order_rules::{Checkout, Decision, HistoryEntry, OrderChanges, OrderState, OrderStatus};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use super::OrderDbError;

/// A checkout ready to be stored.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub user_id: Uuid,
    pub checkout: Checkout,
    pub deadline_at: DateTime<Utc>,
    pub idempotency_key: Option<String>,
    pub request_digest: String,
}

/// What an Idempotency-Key finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// The same request was made before: here is its order.
    Same { id: Uuid, status: OrderStatus },
    /// The key was used for a different request.
    Different,
}

pub async fn find_by_idempotency_key(
    tx: &mut PgConnection,
    user_id: Uuid,
    key: &str,
    digest: &str,
) -> Result<Option<Existing>, sqlx::Error> {
    let found: Option<(Uuid, String, Option<String>)> = sqlx::query_as(
        "SELECT id, status, request_digest FROM orders WHERE user_id = $1 AND idempotency_key = $2",
    )
    .bind(user_id)
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(found.map(|(id, status, stored)| {
        if stored.as_deref() == Some(digest) {
            Existing::Same {
                id,
                status: status.parse().unwrap_or(OrderStatus::Pending),
            }
        } else {
            Existing::Different
        }
    }))
}

/// Stores the order `id` in `state` (a new order: pending) and publishes `emit` (its
/// OrderCreated), in the caller's transaction.
pub async fn insert_order(
    tx: &mut PgConnection,
    id: Uuid,
    order: &NewOrder,
    state: &OrderState,
    emit: &[Event],
    cause: Cause<'_>,
) -> Result<(), OrderDbError> {
    let checkout = &order.checkout;
    let lines = &checkout.lines;
    // The order, its lines and its first history entry in one statement, as `save` writes a
    // change: each round trip costs PostgreSQL and this service more than the work in it.
    sqlx::query(
        "WITH new_order AS (
             INSERT INTO orders (id, user_id, status, total_minor, currency, shipping_address,
                                 address, deadline_at, idempotency_key, request_digest)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
          RETURNING id
         ), lines AS (
             INSERT INTO order_lines (order_id, sku, name, quantity, unit_price_minor)
             SELECT new_order.id, line.sku, line.name, line.quantity, line.unit_price_minor
               FROM new_order,
                    unnest($12::text[], $13::text[], $14::int4[], $15::int8[])
                        AS line (sku, name, quantity, unit_price_minor)
         )
         INSERT INTO order_status_history (order_id, status, reason)
         SELECT id, $3, $11 FROM new_order",
    )
    .bind(id)
    .bind(order.user_id)
    .bind(state.status().as_str())
    .bind(checkout.total_minor)
    .bind(&checkout.currency)
    .bind(checkout.address.one_line())
    .bind(
        checkout
            .address
            .postal()
            .map(|address| sqlx::types::Json(address.clone())),
    )
    .bind(order.deadline_at)
    .bind(&order.idempotency_key)
    .bind(&order.request_digest)
    .bind(state.reason.as_deref())
    .bind(
        lines
            .iter()
            .map(|line| line.sku.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        lines
            .iter()
            .map(|line| line.name.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(lines.iter().map(|line| line.quantity).collect::<Vec<_>>())
    .bind(
        lines
            .iter()
            .map(|line| line.unit_price_minor)
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    record_status_metrics(id, state.status());
    outbox::publish_all(tx, emit, cause).await?;
    Ok(())
}

/// Counts status changes for dashboards (`order_status_changes_total{status}`), and for an order
/// that became paid, its checkout → paid latency (`checkout_paid_seconds`). The order's id is a
/// UUIDv7, so its creation time is in the id itself: no column is read for it. Recorded before
/// the commit: a transaction retried records twice, which a percentile can take.
fn record_status_metrics(id: Uuid, status: OrderStatus) {
    metrics::counter!("order_status_changes_total", "status" => status.as_str()).increment(1);
    if status == OrderStatus::Paid
        && let Some(created) = created_at_of(id)
    {
        let elapsed = (Utc::now() - created).to_std().unwrap_or_default();
        metrics::histogram!("checkout_paid_seconds").record(elapsed.as_secs_f64());
    }
}

/// When a UUIDv7 was made (`None` for other versions).
fn created_at_of(id: Uuid) -> Option<DateTime<Utc>> {
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
}

/// Orders not final although their deadline passed more than `grace` ago: pending ones the
/// deadline worker has not cancelled, paid ones shipping never scheduled. For the
/// `orders_past_deadline` gauge; both counts read a partial index by deadline.
pub async fn past_deadline(pool: &PgPool, grace_secs: f64) -> Result<i64, sqlx::Error> {
    let (count,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT (SELECT count(*) FROM orders WHERE status = '{pending}'
                   AND deadline_at <= now() - make_interval(secs => $1))
              + (SELECT count(*) FROM orders WHERE status = '{paid}'
                   AND deadline_at <= now() - make_interval(secs => $1))",
        pending = OrderStatus::Pending.as_str(),
        paid = OrderStatus::Paid.as_str(),
    )))
    .bind(grace_secs)
    .fetch_one(pool)
    .await?;
    Ok(count)
}

#[derive(Debug, sqlx::FromRow)]
struct StateRow {
    user_id: Uuid,
    status: String,
    reason: Option<String>,
    rejected_sku: Option<String>,
    stock_committed: bool,
    payment_captured: bool,
    refunded: bool,
}

#[derive(Debug, sqlx::FromRow)]
struct LockedRow {
    id: Uuid,
    #[sqlx(flatten)]
    state: StateRow,
}

impl StateRow {
    fn into_state(self) -> OrderState {
        OrderState {
            status: self.status.parse().ok(),
            reason: self.reason,
            rejected_sku: self.rejected_sku,
            stock_committed: self.stock_committed,
            payment_captured: self.payment_captured,
            refunded: self.refunded,
        }
    }
}

/// Locks the orders among `ids` that exist, in id order (so that transactions locking several
/// orders never wait on each other in a circle), and returns their saga states.
pub async fn lock_states(
    tx: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, OrderState)>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query_as::<Postgres, LockedRow>(
        "SELECT id, user_id, status, reason, rejected_sku, stock_committed, payment_captured,
                refunded
           FROM orders WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.id, row.state.into_state()))
        .collect())
}

/// Locks an order and returns its owner and saga state.
pub async fn lock_order(
    tx: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(Uuid, OrderState)>, sqlx::Error> {
    let row = sqlx::query_as::<Postgres, StateRow>(
        "SELECT user_id, status, reason, rejected_sku, stock_committed, payment_captured, refunded
           FROM orders WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.map(|row| (row.user_id, row.into_state())))
}

/// Stores a decision about a locked order that was in `before`: its new state, a status change
/// in the history, and the events it publishes. Nothing when nothing changed.
pub async fn save(
    tx: &mut PgConnection,
    id: Uuid,
    before: &OrderState,
    decision: &Decision,
    cause: Cause<'_>,
) -> Result<(), OrderDbError> {
    if decision.state == *before {
        return Ok(());
    }
    let next = &decision.state;
    let history = (next.status() != before.status())
        .then(|| HistoryEntry {
            order_id: id,
            status: next.status(),
            reason: next.reason.clone(),
        })
        .into_iter()
        .collect();
    store(
        tx,
        &OrderChanges {
            states: vec![(id, next.clone())],
            history,
            shipments: Vec::new(),
        },
    )
    .await?;
    outbox::publish_all(tx, &decision.emit, cause).await?;
    Ok(())
}

/// Stores what a transaction's events changed: the orders' new states and their status
/// history in one statement (each round trip costs PostgreSQL and this service more CPU than
/// the work in it: docs/benchmarks.md), and the shipments in another when any changed.
pub async fn store(tx: &mut PgConnection, changes: &OrderChanges<Uuid>) -> Result<(), sqlx::Error> {
    if !changes.states.is_empty() || !changes.history.is_empty() {
        let states = &changes.states;
        let history = &changes.history;
        sqlx::query(
            "WITH updated AS (
                 UPDATE orders o
                    SET status = s.status, reason = s.reason, rejected_sku = s.rejected_sku,
                        stock_committed = s.stock_committed,
                        payment_captured = s.payment_captured, refunded = s.refunded,
                        updated_at = now()
                   FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bool[],
                               $6::bool[], $7::bool[])
                        AS s (id, status, reason, rejected_sku, stock_committed,
                              payment_captured, refunded)
                  WHERE o.id = s.id
             )
             INSERT INTO order_status_history (order_id, status, reason)
             SELECT order_id, status, reason
               FROM unnest($8::uuid[], $9::text[], $10::text[]) WITH ORDINALITY
                    AS entry (order_id, status, reason, position)
              ORDER BY position",
        )
        .bind(states.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(
            states
                .iter()
                .map(|(_, state)| state.status().as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            states
                .iter()
                .map(|(_, state)| state.reason.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            states
                .iter()
                .map(|(_, state)| state.rejected_sku.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            states
                .iter()
                .map(|(_, state)| state.stock_committed)
                .collect::<Vec<_>>(),
        )
        .bind(
            states
                .iter()
                .map(|(_, state)| state.payment_captured)
                .collect::<Vec<_>>(),
        )
        .bind(
            states
                .iter()
                .map(|(_, state)| state.refunded)
                .collect::<Vec<_>>(),
        )
        .bind(
            history
                .iter()
                .map(|entry| entry.order_id)
                .collect::<Vec<_>>(),
        )
        .bind(
            history
                .iter()
                .map(|entry| entry.status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            history
                .iter()
                .map(|entry| entry.reason.as_deref())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
        for entry in history {
            record_status_metrics(entry.order_id, entry.status);
        }
    }
    super::shipments::save_shipments(tx, &changes.shipments).await
}

/// Orders still pending past their deadline. The status is written into the statement, not
/// bound: the planner then uses the partial index of pending orders by deadline.
fn overdue_orders_source() -> String {
    format!(
        "orders WHERE status = '{}' AND deadline_at <= now()",
        OrderStatus::Pending.as_str()
    )
}

/// Whether any order is pending past its deadline (without a transaction).
pub async fn any_overdue(pool: &PgPool) -> Result<bool, sqlx::Error> {
    messaging::worker::any_due(pool, &overdue_orders_source()).await
}

/// Locks up to `limit` orders still pending past their deadline, oldest deadline first;
/// orders another transaction holds are skipped.
pub async fn overdue(tx: &mut PgConnection, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
    let due: Vec<(Uuid,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {} ORDER BY deadline_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        overdue_orders_source()
    )))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    Ok(due.into_iter().map(|(id,)| id).collect())
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OrderRow {
    pub id: Uuid,
    #[serde(skip)]
    pub user_id: Uuid,
    pub status: String,
    pub reason: Option<String>,
    pub rejected_sku: Option<String>,
    pub total_minor: i64,
    pub currency: String,
    /// The address on one line: as typed for a free-text address, else `address` formatted.
    pub shipping_address: String,
    /// The structured address; `null` for an order placed with a free-text address.
    #[schema(value_type = Option<PostalAddress>)]
    pub address: Option<sqlx::types::Json<PostalAddress>>,
    pub refunded: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OrderLineRow {
    #[serde(skip)]
    pub order_id: Uuid,
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
}

const ORDER_COLUMNS: &str =
    "id, user_id, status, reason, rejected_sku, total_minor, trim(currency) AS currency,
    shipping_address, address, refunded, created_at, updated_at";

pub async fn order_of_user<'c>(
    db: impl sqlx::PgExecutor<'c>,
    user_id: Uuid,
    id: Uuid,
) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, OrderRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND user_id = $2"
    )))
    .bind(id)
    .bind(user_id)
    .fetch_optional(db)
    .await
}

/// The user's orders, newest first, at most `limit`; with `before`, only those placed before
/// that order of theirs (none when it is not theirs).
pub async fn orders_of_user<'c>(
    db: impl sqlx::PgExecutor<'c>,
    user_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<OrderRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, OrderRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 \
         AND ($2::uuid IS NULL OR (created_at, id) < \
              (SELECT created_at, id FROM orders WHERE id = $2 AND user_id = $1)) \
         ORDER BY created_at DESC, id DESC LIMIT $3"
    )))
    .bind(user_id)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn lines_of<'c>(
    db: impl sqlx::PgExecutor<'c>,
    ids: &[Uuid],
) -> Result<Vec<OrderLineRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, OrderLineRow>(
        "SELECT order_id, sku, name, quantity, unit_price_minor FROM order_lines WHERE order_id = ANY($1) ORDER BY sku",
    )
    .bind(ids)
    .fetch_all(db)
    .await
}

/// One entry of an order's status history; also the body of its `order_status` notification
/// (see migration 0004).
#[derive(Debug, Clone, Serialize, serde::Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StatusChange {
    /// Sent as the event's id, not in its data.
    #[serde(skip_serializing)]
    pub id: i64,
    pub status: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// Status changes of an order after history entry `after`. One order's changes are written
/// under its row lock, so their ids commit in order and none is skipped.
pub async fn status_changes(
    pool: &PgPool,
    order_id: Uuid,
    after: i64,
) -> Result<Vec<StatusChange>, sqlx::Error> {
    sqlx::query_as::<Postgres, StatusChange>(
        "SELECT id, status, reason, at FROM order_status_history WHERE order_id = $1 AND id > $2 ORDER BY id",
    )
    .bind(order_id)
    .bind(after)
    .fetch_all(pool)
    .await
}
