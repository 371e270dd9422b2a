use chrono::{DateTime, NaiveDate, Utc};
use events::{Event, EventMetadata, OrderCreated, ShipmentScheduled};
use messaging::outbox::{self, Cause};
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use crate::domain::{self, Advance, ShipmentStatus, Step};

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
    order: &OrderCreated,
) -> Result<(), sqlx::Error> {
    let item_count: i64 = order
        .lines
        .iter()
        .map(|line| i64::from(line.quantity))
        .sum();
    let lines: Vec<serde_json::Value> = order
        .lines
        .iter()
        .map(|line| serde_json::json!({ "sku": line.sku, "quantity": line.quantity }))
        .collect();
    sqlx::query(
        "INSERT INTO orders (order_id, shipping_address, item_count, lines)
         VALUES ($1, $2, $3, $4) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(&order.shipping_address)
    .bind(i32::try_from(item_count).unwrap_or(i32::MAX))
    .bind(sqlx::types::Json(lines))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Schedules the one shipment of a paid order and publishes ShipmentScheduled, unless the order
/// already has its shipment. Returns the new shipment's id.
pub async fn schedule(
    tx: &mut PgConnection,
    order_id: Uuid,
    paid_on: NaiveDate,
    cause: &EventMetadata,
) -> Result<Option<Uuid>, ShippingError> {
    let order: Option<(String, i32)> =
        sqlx::query_as("SELECT shipping_address, item_count FROM orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?;
    let (address, item_count) = order.ok_or(ShippingError::UnknownOrder(order_id))?;
    let shipment_id = Uuid::now_v7();
    let plan = domain::plan_shipment(i64::from(item_count), paid_on, shipment_id);
    let inserted = sqlx::query(
        "INSERT INTO shipments (id, order_id, carrier, tracking_number, pickup_date, status,
                                shipping_address, item_count)
         VALUES ($1, $2, $3, $4, $5, 'scheduled', $6, $7)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(shipment_id)
    .bind(order_id)
    .bind(plan.carrier.name())
    .bind(&plan.tracking_number)
    .bind(plan.pickup_date)
    .bind(&address)
    .bind(item_count)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(None);
    }
    let event: Event = ShipmentScheduled {
        order_id: order_id.to_string(),
        shipment_id: shipment_id.to_string(),
        carrier: plan.carrier.name().to_owned(),
        tracking_number: plan.tracking_number.clone(),
        pickup_date: plan.pickup_date.to_string(),
    }
    .into();
    outbox::publish(tx, &event, Cause::Event(cause)).await?;
    Ok(Some(shipment_id))
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
    pub item_count: i32,
    pub created_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

const SHIPMENT_COLUMNS: &str = "id, order_id, carrier, tracking_number, pickup_date, status, \
     shipping_address, item_count, created_at, dispatched_at, delivered_at";

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

/// Moves an order's shipment one step forward and publishes the event, in one transaction.
/// Repeating a step that was taken answers the shipment as it is and publishes nothing.
pub async fn advance(
    pool: &PgPool,
    order_id: Uuid,
    step: Step,
    cause: Cause<'_>,
) -> Result<ShipmentRow, ShippingError> {
    let mut tx = pool.begin().await?;
    let current: Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, status FROM shipments WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?;
    let (shipment_id, status) = current.ok_or(ShippingError::NoShipment)?;
    let status: ShipmentStatus = status.parse().map_err(ShippingError::Refused)?;
    match domain::advance(
        &order_id.to_string(),
        &shipment_id.to_string(),
        status,
        step,
    ) {
        Advance::Refused(why) => return Err(ShippingError::Refused(why)),
        Advance::AlreadyDone => {}
        Advance::Moved { status, emit } => {
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
            outbox::publish(&mut tx, &emit, cause).await?;
        }
    }
    tx.commit().await?;
    shipment_of(pool, order_id)
        .await?
        .ok_or(ShippingError::NoShipment)
}
