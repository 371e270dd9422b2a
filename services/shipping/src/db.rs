//! The shipping database: the orders it learnt and their shipments. Loading and storing only:
//! what changes is decided by `shipping_rules`, in `crate::consumers`.

use std::collections::HashMap;

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

/// Remembers where orders go and what is in them, in one statement; an order remembered before
/// keeps what it was first told.
pub async fn remember_orders(
    tx: &mut PgConnection,
    orders: &[(Uuid, OrderFacts)],
) -> Result<(), sqlx::Error> {
    if orders.is_empty() {
        return Ok(());
    }
    let lines: Vec<sqlx::types::Json<Vec<serde_json::Value>>> = orders
        .iter()
        .map(|(_, order)| {
            sqlx::types::Json(
                order
                    .lines
                    .iter()
                    .map(|(sku, quantity)| serde_json::json!({ "sku": sku, "quantity": quantity }))
                    .collect(),
            )
        })
        .collect();
    sqlx::query(
        "INSERT INTO orders (order_id, shipping_address, country, item_count, lines)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::jsonb[])
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(orders.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(
        orders
            .iter()
            .map(|(_, order)| order.shipping_address.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        orders
            .iter()
            .map(|(_, order)| order.country.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        orders
            .iter()
            .map(|(_, order)| i32::try_from(order.item_count).unwrap_or(i32::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(lines)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// What the service knows of orders before scheduling them, by order id: what each one's
/// OrderCreated said (`None` if it was never seen) and whether it has its shipment already.
/// One statement whatever the number; it sees what this transaction remembered before it.
pub async fn orders_to_ship(
    tx: &mut PgConnection,
    order_ids: &[Uuid],
) -> Result<HashMap<Uuid, (Option<OrderFacts>, bool)>, sqlx::Error> {
    // The order; (address, country, item count) if it was seen; whether it has its shipment.
    type Known = (Uuid, Option<String>, Option<String>, Option<i32>, bool);
    let rows: Vec<Known> = sqlx::query_as(
        "SELECT wanted.order_id, o.shipping_address, o.country, o.item_count,
                EXISTS (SELECT 1 FROM shipments s WHERE s.order_id = wanted.order_id)
           FROM (SELECT DISTINCT order_id FROM unnest($1::uuid[]) AS listed (order_id))
                AS wanted
           LEFT JOIN orders o USING (order_id)",
    )
    .bind(order_ids)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(order_id, address, country, item_count, scheduled)| {
            let facts = address
                .zip(item_count)
                .map(|(shipping_address, item_count)| OrderFacts {
                    shipping_address,
                    country,
                    item_count: i64::from(item_count),
                    lines: Vec::new(),
                });
            (order_id, (facts, scheduled))
        })
        .collect())
}

/// A shipment planned for an order, to store.
#[derive(Debug, Clone)]
pub struct NewShipment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub order: OrderFacts,
    pub plan: Plan,
}

/// Stores planned shipments in one statement and returns the orders whose shipment was stored:
/// an order that got its shipment meanwhile keeps that one.
pub async fn insert_shipments(
    tx: &mut PgConnection,
    shipments: &[NewShipment],
) -> Result<Vec<Uuid>, sqlx::Error> {
    if shipments.is_empty() {
        return Ok(Vec::new());
    }
    let inserted: Vec<(Uuid,)> = sqlx::query_as(
        "INSERT INTO shipments (id, order_id, carrier, tracking_number, pickup_date, status,
                                shipping_address, country, item_count)
         SELECT id, order_id, carrier, tracking_number, pickup_date, $6, shipping_address,
                country, item_count
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::date[], $7::text[],
                       $8::text[], $9::int[])
                AS planned (id, order_id, carrier, tracking_number, pickup_date,
                            shipping_address, country, item_count)
         ON CONFLICT (order_id) DO NOTHING
         RETURNING order_id",
    )
    .bind(shipments.iter().map(|new| new.id).collect::<Vec<_>>())
    .bind(shipments.iter().map(|new| new.order_id).collect::<Vec<_>>())
    .bind(
        shipments
            .iter()
            .map(|new| new.plan.carrier.name())
            .collect::<Vec<_>>(),
    )
    .bind(
        shipments
            .iter()
            .map(|new| new.plan.tracking_number.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        shipments
            .iter()
            .map(|new| new.plan.pickup_date)
            .collect::<Vec<_>>(),
    )
    .bind(ShipmentStatus::Scheduled.as_str())
    .bind(
        shipments
            .iter()
            .map(|new| new.order.shipping_address.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        shipments
            .iter()
            .map(|new| new.order.country.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        shipments
            .iter()
            .map(|new| i32::try_from(new.order.item_count).unwrap_or(i32::MAX))
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(inserted.into_iter().map(|(order_id,)| order_id).collect())
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
