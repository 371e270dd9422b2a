//! The shipment of each order, as the shipping service's events describe it.

use chrono::{DateTime, NaiveDate, Utc};
use order_rules::{Shipment, ShipmentStatus};
use serde::Serialize;
use sqlx::{PgConnection, Postgres};
use uuid::Uuid;

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

/// What is known of an order's shipment, in the caller's transaction (which holds the order's
/// row lock).
pub async fn shipment(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<Shipment>, sqlx::Error> {
    Ok(
        sqlx::query_as::<Postgres, ShipmentRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {SHIPMENT_COLUMNS} FROM order_shipments WHERE order_id = $1"
        )))
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?
        .and_then(|row| row.to_domain()),
    )
}

/// Stores what is known of an order's shipment.
pub async fn save_shipment(
    tx: &mut PgConnection,
    order_id: Uuid,
    next: &Shipment,
) -> Result<(), sqlx::Error> {
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

pub async fn shipments_of<'c>(
    db: impl sqlx::PgExecutor<'c>,
    ids: &[Uuid],
) -> Result<Vec<ShipmentRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, ShipmentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {SHIPMENT_COLUMNS} FROM order_shipments WHERE order_id = ANY($1)"
    )))
    .bind(ids)
    .fetch_all(db)
    .await
}
