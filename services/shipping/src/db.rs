//! The shipping database: the orders it learnt and their shipments. Loading and storing only:
//! what changes is decided by `shipping_rules`, in `crate::consumers`.

use chrono::{DateTime, NaiveDate, Utc};
use events::Event;
use messaging::outbox::{self, Cause};
use serde::Serialize;
use shipping_rules::{OrderFacts, Plan, ShipmentStatus};
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum ShippingError {
    #[error("order {0} was paid but its OrderCreated was never seen")]
    UnknownOrder(Uuid),
    #[error("no shipment for this order")]
    NoShipment,
    #[error("{0}")]
    Refused(String),
    #[error("database")]
    Database(#[from] sqlx::Error),
    #[error("outbox")]
    Outbox(#[from] outbox::OutboxError),
}

/// Remembers where an order goes and what is in it.
pub async fn remember_order(
    tx: &mut PgConnection,
    order_id: Uuid,
    order: &OrderFacts,
) -> Result<(), sqlx::Error> {
    let lines: Vec<serde_json::Value> = order
        .lines
        .iter()
        .map(|(sku, quantity)| serde_json::json!({ "sku": sku, "quantity": quantity }))
        .collect();
    sqlx::query(
        "INSERT INTO orders (order_id, shipping_address, country, item_count, lines)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(&order.shipping_address)
    .bind(&order.country)
    .bind(i32::try_from(order.item_count).unwrap_or(i32::MAX))
    .bind(sqlx::types::Json(lines))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// What the service knows of an order before scheduling it: what its OrderCreated said (`None`
/// if it was never seen) and whether it has its shipment already.
pub async fn order_to_ship(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<(Option<OrderFacts>, bool), sqlx::Error> {
    // (address, country, item count) of the order if it was seen; whether it has its shipment.
    type Known = (Option<String>, Option<String>, Option<i32>, bool);
    let row: Option<Known> = sqlx::query_as(
        "SELECT o.shipping_address, o.country, o.item_count,
                EXISTS (SELECT 1 FROM shipments s WHERE s.order_id = $1)
           FROM (SELECT $1::uuid AS order_id) AS wanted
           LEFT JOIN orders o USING (order_id)",
    )
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((address, country, item_count, scheduled)) = row else {
        return Ok((None, false));
    };
    let facts = address
        .zip(item_count)
        .map(|(shipping_address, item_count)| OrderFacts {
            shipping_address,
            country,
            item_count: i64::from(item_count),
            lines: Vec::new(),
        });
    Ok((facts, scheduled))
}

/// Stores the shipment `shipment_id` of an order as planned, and publishes `emit` (its
/// ShipmentScheduled). Returns false, publishing nothing, when the order got its shipment
/// meanwhile.
pub async fn insert_shipment(
    tx: &mut PgConnection,
    order_id: Uuid,
    shipment_id: Uuid,
    order: &OrderFacts,
    plan: &Plan,
    emit: &Event,
    cause: Cause<'_>,
) -> Result<bool, ShippingError> {
    let inserted = sqlx::query(
        "INSERT INTO shipments (id, order_id, carrier, tracking_number, pickup_date, status,
                                shipping_address, country, item_count)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(shipment_id)
    .bind(order_id)
    .bind(plan.carrier.name())
    .bind(&plan.tracking_number)
    .bind(plan.pickup_date)
    .bind(ShipmentStatus::Scheduled.as_str())
    .bind(&order.shipping_address)
    .bind(&order.country)
    .bind(i32::try_from(order.item_count).unwrap_or(i32::MAX))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    outbox::publish(tx, emit, cause).await?;
    Ok(true)
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Shipment)]
pub struct ShipmentRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub carrier: String,
    pub tracking_number: String,
    pub pickup_date: NaiveDate,
    pub status: String,
    pub shipping_address: String,
    /// The destination's ISO 3166-1 alpha-2 code; `null` for a free-text address.
    pub country: Option<String>,
    pub item_count: i32,
    pub created_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

const SHIPMENT_COLUMNS: &str = "id, order_id, carrier, tracking_number, pickup_date, status, \
     shipping_address, country, item_count, created_at, dispatched_at, delivered_at";

pub async fn shipment_of(
    pool: &PgPool,
    order_id: Uuid,
) -> Result<Option<ShipmentRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, ShipmentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE order_id = $1"
    )))
    .bind(order_id)
    .fetch_optional(pool)
    .await
}

/// The newest shipments, optionally only those in `status`.
pub async fn shipments(
    pool: &PgPool,
    status: Option<ShipmentStatus>,
    limit: i64,
) -> Result<Vec<ShipmentRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, ShipmentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE $1::text IS NULL OR status = $1
          ORDER BY created_at DESC, id DESC LIMIT $2"
    )))
    .bind(status.map(ShipmentStatus::as_str))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// An order's shipment (id and status), its row locked.
pub async fn lock_shipment(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<(Uuid, ShipmentStatus)>, ShippingError> {
    let current: Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, status FROM shipments WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?;
    current
        .map(|(id, status)| Ok((id, status.parse().map_err(ShippingError::Refused)?)))
        .transpose()
}

/// Stores the step a shipment took (stamping when) and publishes `emit`.
pub async fn save_step(
    tx: &mut PgConnection,
    order_id: Uuid,
    status: ShipmentStatus,
    emit: &Event,
    cause: Cause<'_>,
) -> Result<(), ShippingError> {
    let stamp = match status {
        ShipmentStatus::Dispatched => "dispatched_at",
        ShipmentStatus::Delivered => "delivered_at",
        ShipmentStatus::Scheduled => "updated_at",
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE shipments SET status = $2, {stamp} = now(), updated_at = now()
          WHERE order_id = $1"
    )))
    .bind(order_id)
    .bind(status.as_str())
    .execute(&mut *tx)
    .await?;
    outbox::publish(tx, emit, cause).await?;
    Ok(())
}
