//! The shipping service's reactions: it learns orders from OrderCreated and schedules the
//! shipment of each paid one; admins move shipments on. Each is one decide-then-save step:
//! `shipping_rules` decides, `db` stores.

use events::Event;
use messaging::outbox::{self, Cause};
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
    fn handles(&self, event: &Event) -> bool {
        shipping_rules::HANDLES.contains(&event.event_type())
    }

    /// The whole batch in four statements whatever its size: the orders it learns, then what
    /// is known of the orders it pays (which sees those just learnt), the shipments
    /// `shipping_rules` plans for them, and the ShipmentScheduled of each one stored.
    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[&ReceivedEvent],
    ) -> Result<(), HandlerError> {
        let mut learnt = Vec::new();
        let mut paid = Vec::new();
        for received in events {
            let Some((order, input)) = shipping_rules::input_of(&received.event) else {
                continue;
            };
            let id = order_id(order)?;
            match input {
                ShippingInput::OrderCreated(facts) => learnt.push((id, facts)),
                ShippingInput::OrderPaid => paid.push((id, *received)),
            }
        }
        db::remember_orders(tx, &learnt).await?;
        if paid.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = paid.iter().map(|(id, _)| *id).collect();
        let known = db::orders_to_ship(tx, &ids).await?;
        let mut planned: Vec<(db::NewShipment, Event, Cause<'_>)> = Vec::new();
        for (id, received) in paid {
            let (order, scheduled) = known.get(&id).cloned().unwrap_or((None, false));
            let scheduled = scheduled || planned.iter().any(|(new, _, _)| new.order_id == id);
            let shipment_id = Uuid::now_v7();
            // The day of the payment, not of handling: a replay or a lagging consumer plans
            // the same pick-up.
            let paid_on = received.metadata.occurred_at.date_naive();
            match shipping_rules::schedule(
                &id.to_string(),
                order.as_ref(),
                scheduled,
                paid_on,
                shipment_id,
                &self.home_country,
            ) {
                Scheduling::AlreadyScheduled => {
                    tracing::debug!(order_id = %id, "already scheduled");
                }
                // Without its OrderCreated there is no address to ship to.
                Scheduling::UnknownOrder => {
                    return Err(HandlerError::Rejected(
                        ShippingError::UnknownOrder(id).into(),
                    ));
                }
                Scheduling::Schedule { plan, emit } => {
                    let order = order
                        .ok_or(ShippingError::UnknownOrder(id))
                        .map_err(|error| HandlerError::Rejected(error.into()))?;
                    let new = db::NewShipment {
                        id: shipment_id,
                        order_id: id,
                        order,
                        plan,
                    };
                    planned.push((new, emit, Cause::Event(&received.metadata)));
                }
            }
        }
        let shipments: Vec<db::NewShipment> =
            planned.iter().map(|(new, _, _)| new.clone()).collect();
        let stored = db::insert_shipments(tx, &shipments).await?;
        let mut publish = Vec::new();
        for (new, emit, cause) in planned {
            // An order that got its shipment meanwhile publishes nothing more.
            if stored.contains(&new.order_id) {
                tracing::info!(order_id = %new.order_id, shipment = %new.id, "shipment scheduled");
                publish.push((emit, cause));
            }
        }
        outbox::publish_caused(tx, &publish).await?;
        Ok(())
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
