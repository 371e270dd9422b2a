use chrono::{DateTime, NaiveDate, Utc};
use events::{Event, OrderCreated, OrderLine, ProductSnapshot};
use messaging::outbox::{self, Cause};
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use crate::domain::{
    self, Decision, OrderInput, OrderState, OrderStatus, PricedLine, Shipment, ShipmentStatus,
};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Where each status change is announced (a trigger of migration 0004).
pub const STATUS_CHANNEL: &str = "order_status";

#[derive(Debug, thiserror::Error)]
pub enum OrderDbError {
    #[error("{sku} is not in the catalog or not for sale")]
    UnknownSku { sku: String },
    #[error("database")]
    Database(#[from] sqlx::Error),
    #[error("outbox")]
    Outbox(#[from] outbox::OutboxError),
}

/// Keeps the catalog replica equal to the latest snapshot of each product.
pub async fn apply_snapshot(
    tx: &mut PgConnection,
    snapshot: &ProductSnapshot,
) -> Result<(), sqlx::Error> {
    let skus: Vec<&str> = snapshot.variants.iter().map(|v| v.sku.as_str()).collect();
    // Variants gone from the product are no longer for sale.
    sqlx::query(
        "UPDATE catalog_replica SET available = false, updated_at = now()
          WHERE product_id = $1 AND NOT (sku = ANY($2))",
    )
    .bind(&snapshot.product_id)
    .bind(&skus)
    .execute(&mut *tx)
    .await?;
    for variant in &snapshot.variants {
        sqlx::query(
            "INSERT INTO catalog_replica (sku, product_id, product_name, variant_name, price_minor, currency, available)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (sku) DO UPDATE
                SET product_id = EXCLUDED.product_id, product_name = EXCLUDED.product_name,
                    variant_name = EXCLUDED.variant_name, price_minor = EXCLUDED.price_minor,
                    currency = EXCLUDED.currency, available = EXCLUDED.available, updated_at = now()",
        )
        .bind(&variant.sku)
        .bind(&snapshot.product_id)
        .bind(&snapshot.name)
        .bind(&variant.name)
        .bind(variant.price_minor)
        .bind(&variant.currency)
        .bind(!snapshot.archived)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CartLine {
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
    pub currency: String,
    pub available: bool,
}

pub async fn cart(pool: &PgPool, user_id: Uuid) -> Result<Vec<CartLine>, sqlx::Error> {
    sqlx::query_as::<Postgres, CartLine>(
        "SELECT c.sku, r.product_name || ' – ' || r.variant_name AS name, c.quantity,
                r.price_minor AS unit_price_minor, r.currency, r.available
           FROM cart_items c JOIN catalog_replica r ON r.sku = c.sku
          WHERE c.user_id = $1 ORDER BY c.added_at, c.sku",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}

pub async fn set_cart_item(
    pool: &PgPool,
    user_id: Uuid,
    sku: &str,
    quantity: i32,
) -> Result<(), OrderDbError> {
    let known: Option<(bool,)> =
        sqlx::query_as("SELECT available FROM catalog_replica WHERE sku = $1")
            .bind(sku)
            .fetch_optional(pool)
            .await?;
    if !known.is_some_and(|(available,)| available) {
        return Err(OrderDbError::UnknownSku {
            sku: sku.to_owned(),
        });
    }
    sqlx::query(
        "INSERT INTO cart_items (user_id, sku, quantity) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, sku) DO UPDATE SET quantity = EXCLUDED.quantity",
    )
    .bind(user_id)
    .bind(sku)
    .bind(quantity)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn remove_cart_item(
    pool: &PgPool,
    user_id: Uuid,
    sku: &str,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM cart_items WHERE user_id = $1 AND sku = $2")
            .bind(user_id)
            .bind(sku)
            .execute(pool)
            .await?
            .rows_affected()
            > 0,
    )
}

/// Prices the requested lines from the replica, in request order.
pub async fn price_lines(
    tx: &mut PgConnection,
    wanted: &[(String, i32)],
) -> Result<Vec<PricedLine>, OrderDbError> {
    let skus: Vec<&str> = wanted.iter().map(|(sku, _)| sku.as_str()).collect();
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT sku, product_name || ' – ' || variant_name, price_minor, currency
           FROM catalog_replica WHERE sku = ANY($1) AND available",
    )
    .bind(&skus)
    .fetch_all(&mut *tx)
    .await?;
    wanted
        .iter()
        .map(|(sku, quantity)| {
            let (_, name, price, currency) = rows
                .iter()
                .find(|(known, ..)| known == sku)
                .ok_or_else(|| OrderDbError::UnknownSku { sku: sku.clone() })?;
            Ok(PricedLine {
                sku: sku.clone(),
                name: name.clone(),
                quantity: *quantity,
                unit_price_minor: *price,
                currency: currency.trim().to_owned(),
            })
        })
        .collect()
}

/// A checkout ready to be stored.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub user_id: Uuid,
    pub lines: Vec<PricedLine>,
    pub total_minor: i64,
    pub currency: String,
    pub payment_token: String,
    pub shipping_address: String,
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

/// Stores a pending order and publishes OrderCreated, in the caller's transaction.
pub async fn insert_order(
    tx: &mut PgConnection,
    order: &NewOrder,
    cause: Cause<'_>,
) -> Result<Uuid, OrderDbError> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO orders (id, user_id, status, total_minor, currency, shipping_address, deadline_at,
                             idempotency_key, request_digest)
         VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(order.user_id)
    .bind(order.total_minor)
    .bind(&order.currency)
    .bind(&order.shipping_address)
    .bind(order.deadline_at)
    .bind(&order.idempotency_key)
    .bind(&order.request_digest)
    .execute(&mut *tx)
    .await?;
    for line in &order.lines {
        sqlx::query(
            "INSERT INTO order_lines (order_id, sku, name, quantity, unit_price_minor) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(&line.sku)
        .bind(&line.name)
        .bind(line.quantity)
        .bind(line.unit_price_minor)
        .execute(&mut *tx)
        .await?;
    }
    record_status(tx, id, OrderStatus::Pending, None).await?;
    let created = OrderCreated {
        order_id: id.to_string(),
        user_id: order.user_id.to_string(),
        lines: order
            .lines
            .iter()
            .map(|line| OrderLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
                unit_price_minor: line.unit_price_minor,
            })
            .collect(),
        total_minor: order.total_minor,
        currency: order.currency.clone(),
        payment_token: order.payment_token.clone(),
        shipping_address: order.shipping_address.clone(),
    };
    outbox::publish(tx, &created.into(), cause).await?;
    Ok(id)
}

async fn record_status(
    tx: &mut PgConnection,
    id: Uuid,
    status: OrderStatus,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO order_status_history (order_id, status, reason) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(status.as_str())
        .bind(reason)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub async fn clear_cart(tx: &mut PgConnection, user_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM cart_items WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
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

/// Locks the orders among `ids`, in id order, so that transactions locking several orders
/// never wait on each other in a circle.
pub async fn lock_orders(tx: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT id FROM orders WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(ids)
        .execute(&mut *tx)
        .await?;
    Ok(())
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
    Ok(row.map(|row| {
        (
            row.user_id,
            OrderState {
                status: row.status.parse().ok(),
                reason: row.reason,
                rejected_sku: row.rejected_sku,
                stock_committed: row.stock_committed,
                payment_captured: row.payment_captured,
                refunded: row.refunded,
            },
        )
    }))
}

/// Applies an input to a locked order: stores the new state, records a status change, and
/// publishes the decision's events.
pub async fn apply(
    tx: &mut PgConnection,
    id: Uuid,
    state: &OrderState,
    input: &OrderInput,
    cause: Cause<'_>,
) -> Result<Decision, OrderDbError> {
    let decision = domain::decide(&id.to_string(), state, input);
    if decision.state == *state {
        return Ok(decision);
    }
    let next = &decision.state;
    sqlx::query(
        "UPDATE orders SET status = $2, reason = $3, rejected_sku = $4, stock_committed = $5,
                           payment_captured = $6, refunded = $7, updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(next.status().as_str())
    .bind(&next.reason)
    .bind(&next.rejected_sku)
    .bind(next.stock_committed)
    .bind(next.payment_captured)
    .bind(next.refunded)
    .execute(&mut *tx)
    .await?;
    if next.status() != state.status() {
        record_status(tx, id, next.status(), next.reason.as_deref()).await?;
    }
    for event in &decision.emit {
        outbox::publish(tx, event, cause).await?;
    }
    Ok(decision)
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
    pub shipping_address: String,
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
    shipping_address, refunded, created_at, updated_at";

pub async fn order_of_user(
    pool: &PgPool,
    user_id: Uuid,
    id: Uuid,
) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, OrderRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND user_id = $2"
    )))
    .bind(id)
    .bind(user_id)
    .fetch_optional(pool)
    .await
}

pub async fn orders_of_user(
    pool: &PgPool,
    user_id: Uuid,
    limit: i64,
) -> Result<Vec<OrderRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, OrderRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
    )))
    .bind(user_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn lines_of(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<OrderLineRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, OrderLineRow>(
        "SELECT order_id, sku, name, quantity, unit_price_minor FROM order_lines WHERE order_id = ANY($1) ORDER BY sku",
    )
    .bind(ids)
    .fetch_all(pool)
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

/// Cancels pending orders past their deadline; returns how many.
pub async fn cancel_overdue(pool: &PgPool, limit: i64) -> Result<usize, OrderDbError> {
    let mut tx = pool.begin().await?;
    let due: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM orders WHERE status = 'pending' AND deadline_at <= now()
          ORDER BY deadline_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    for (id,) in &due {
        if let Some((_, state)) = lock_order(&mut tx, *id).await? {
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

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = OrderShipment)]
pub struct ShipmentRow {
    #[serde(skip)]
    pub order_id: Uuid,
    pub shipment_id: String,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub pickup_date: Option<NaiveDate>,
    pub status: String,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl ShipmentRow {
    fn to_domain(&self) -> Option<Shipment> {
        Some(Shipment {
            shipment_id: self.shipment_id.clone(),
            carrier: self.carrier.clone(),
            tracking_number: self.tracking_number.clone(),
            pickup_date: self.pickup_date,
            status: self.status.parse::<ShipmentStatus>().ok()?,
            dispatched_at: self.dispatched_at,
            delivered_at: self.delivered_at,
        })
    }
}

const SHIPMENT_COLUMNS: &str = "order_id, shipment_id, carrier, tracking_number, pickup_date, \
     status, dispatched_at, delivered_at, updated_at";

/// Records what a shipment event says about an order's shipment, in the caller's transaction
/// (which holds the order's row lock).
pub async fn track_shipment(
    tx: &mut PgConnection,
    order_id: Uuid,
    event: &Event,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let current = sqlx::query_as::<Postgres, ShipmentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {SHIPMENT_COLUMNS} FROM order_shipments WHERE order_id = $1"
    )))
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?
    .and_then(|row| row.to_domain());
    let Some(next) = domain::track_shipment(current.as_ref(), event, at) else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO order_shipments (order_id, shipment_id, carrier, tracking_number, pickup_date,
                                      status, dispatched_at, delivered_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (order_id) DO UPDATE
            SET shipment_id = EXCLUDED.shipment_id, carrier = EXCLUDED.carrier,
                tracking_number = EXCLUDED.tracking_number, pickup_date = EXCLUDED.pickup_date,
                status = EXCLUDED.status, dispatched_at = EXCLUDED.dispatched_at,
                delivered_at = EXCLUDED.delivered_at, updated_at = now()",
    )
    .bind(order_id)
    .bind(&next.shipment_id)
    .bind(&next.carrier)
    .bind(&next.tracking_number)
    .bind(next.pickup_date)
    .bind(next.status.as_str())
    .bind(next.dispatched_at)
    .bind(next.delivered_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn shipments_of(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<ShipmentRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, ShipmentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {SHIPMENT_COLUMNS} FROM order_shipments WHERE order_id = ANY($1)"
    )))
    .bind(ids)
    .fetch_all(pool)
    .await
}
