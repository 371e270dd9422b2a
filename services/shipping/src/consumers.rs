//! The shipping service's reactions: it learns orders from OrderCreated and schedules the
//! shipment of each paid one; admins move shipments on. Each is one decide-then-save step:
//! `shipping_rules` decides, `db` stores.

use chrono::NaiveDate;
use messaging::outbox::Cause;
use messaging::{EventHandler, HandlerError, ReceivedEvent};
use shipping_rules::{Advance, Scheduling, ShippingInput, Step};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::db::{self, ShipmentRow, ShippingError};

/// Topics the shipping service consumes: declared with its rules.
pub const TOPICS: &[&str] = shipping_rules::SUBSCRIPTIONS;

#[derive(Debug)]
pub struct ShippingHandler {
    /// Where parcels leave from: `shipping.home_country`.
    pub home_country: String,
}

fn order_id(text: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(text)
        .map_err(|_| HandlerError::Rejected(anyhow::anyhow!("order id {text:?} is not a UUID")))
}

impl EventHandler for ShippingHandler {
    fn handles(&self, event: &events::Event) -> bool {
        shipping_rules::HANDLES.contains(&event.event_type())
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        received: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let Some((order, input)) = shipping_rules::input_of(&received.event) else {
            return Ok(());
        };
        let id = order_id(order)?;
        match input {
            ShippingInput::OrderCreated(facts) => db::remember_order(tx, id, &facts).await?,
            ShippingInput::OrderPaid => {
                // The day of the payment, not of handling: a replay or a lagging consumer plans
                // the same pick-up.
                let paid_on = received.metadata.occurred_at.date_naive();
                let cause = Cause::Event(&received.metadata);
                match schedule(tx, id, paid_on, &self.home_country, cause).await {
                    Ok(Some(shipment)) => {
                        tracing::info!(order_id = %id, %shipment, "shipment scheduled");
                    }
                    Ok(None) => tracing::debug!(order_id = %id, "already scheduled"),
                    Err(ShippingError::Database(error)) => return Err(error.into()),
                    Err(ShippingError::Outbox(error)) => return Err(error.into()),
                    // Without its OrderCreated there is no address to ship to.
                    Err(other) => return Err(HandlerError::Rejected(other.into())),
                }
            }
        }
        Ok(())
    }
}

/// Schedules the one shipment of a paid order and publishes ShipmentScheduled, unless the order
/// has its shipment already. Returns the new shipment's id.
pub async fn schedule(
    tx: &mut PgConnection,
    order_id: Uuid,
    paid_on: NaiveDate,
    home_country: &str,
    cause: Cause<'_>,
) -> Result<Option<Uuid>, ShippingError> {
    let (order, scheduled) = db::order_to_ship(tx, order_id).await?;
    let shipment_id = Uuid::now_v7();
    let id = order_id.to_string();
    match shipping_rules::schedule(
        &id,
        order.as_ref(),
        scheduled,
        paid_on,
        shipment_id,
        home_country,
    ) {
        Scheduling::AlreadyScheduled => Ok(None),
        Scheduling::UnknownOrder => Err(ShippingError::UnknownOrder(order_id)),
        Scheduling::Schedule { plan, emit } => {
            let order = order.ok_or(ShippingError::UnknownOrder(order_id))?;
            let inserted =
                db::insert_shipment(tx, order_id, shipment_id, &order, &plan, &emit, cause).await?;
            Ok(inserted.then_some(shipment_id))
        }
    }
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
    let (shipment_id, status) = db::lock_shipment(&mut tx, order_id)
        .await?
        .ok_or(ShippingError::NoShipment)?;
    match shipping_rules::advance(
        &order_id.to_string(),
        &shipment_id.to_string(),
        status,
        step,
    ) {
        Advance::Refused(why) => return Err(ShippingError::Refused(why)),
        Advance::AlreadyDone => {}
        Advance::Moved { status, emit } => {
            db::save_step(&mut tx, order_id, status, &emit, cause).await?;
        }
    }
    tx.commit().await?;
    db::shipment_of(pool, order_id)
        .await?
        .ok_or(ShippingError::NoShipment)
}
