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

/// What is known of the shipments of `orders`, in the caller's transaction (which holds the
/// orders' row locks).
pub async fn shipments_known(
    tx: &mut PgConnection,
    orders: &[Uuid],
) -> Result<Vec<(Uuid, Shipment)>, sqlx::Error> {
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    Ok(shipments_of(&mut *tx, orders)
        .await?
        .into_iter()
        .filter_map(|row| Some((row.order_id, row.to_domain()?)))
        .collect())
}

/// Stores what is known of the shipments of several orders, in one statement.
pub async fn save_shipments(
    tx: &mut PgConnection,
    shipments: &[(Uuid, Shipment)],
) -> Result<(), sqlx::Error> {
    if shipments.is_empty() {
        return Ok(());
    }
    let column = |field: fn(&Shipment) -> Option<&str>| {
        shipments
            .iter()
            .map(|(_, shipment)| field(shipment))
            .collect::<Vec<_>>()
    };
    sqlx::query(
        "INSERT INTO order_shipments (order_id, shipment_id, carrier, tracking_number, pickup_date,
                                      status, dispatched_at, delivered_at)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::date[],
                              $6::text[], $7::timestamptz[], $8::timestamptz[])
         ON CONFLICT (order_id) DO UPDATE
            SET shipment_id = EXCLUDED.shipment_id, carrier = EXCLUDED.carrier,
                tracking_number = EXCLUDED.tracking_number, pickup_date = EXCLUDED.pickup_date,
                status = EXCLUDED.status, dispatched_at = EXCLUDED.dispatched_at,
                delivered_at = EXCLUDED.delivered_at, updated_at = now()",
    )
    .bind(shipments.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(column(|shipment| Some(shipment.shipment_id.as_str())))
    .bind(column(|shipment| shipment.carrier.as_deref()))
    .bind(column(|shipment| shipment.tracking_number.as_deref()))
    .bind(
        shipments
            .iter()
            .map(|(_, shipment)| shipment.pickup_date)
            .collect::<Vec<_>>(),
    )
    .bind(column(|shipment| Some(shipment.status.as_str())))
    .bind(
        shipments
            .iter()
            .map(|(_, shipment)| shipment.dispatched_at)
            .collect::<Vec<_>>(),
    )
    .bind(
        shipments
            .iter()
            .map(|(_, shipment)| shipment.delivered_at)
            .collect::<Vec<_>>(),
    )
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
