//! The shipping service's reactions: it learns orders from OrderCreated and schedules the
//! shipment of each paid one.

use events::Event;
use messaging::{EventHandler, HandlerError, ReceivedEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::{self, ShippingError};

/// Topics the shipping service consumes.
pub const TOPICS: &[&str] = &["order-events"];

#[derive(Debug)]
pub struct ShippingHandler;

fn order_id(text: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(text)
        .map_err(|_| HandlerError::Rejected(anyhow::anyhow!("order id {text:?} is not a UUID")))
}

impl EventHandler for ShippingHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        received: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        match &received.event {
            Event::OrderCreated(order) => {
                db::remember_order(tx, order_id(&order.order_id)?, order).await?;
            }
            Event::OrderPaid(paid) => {
                let id = order_id(&paid.order_id)?;
                // The day of the payment, not of handling: a replay or a lagging consumer plans
                // the same pick-up.
                let paid_on = received.metadata.occurred_at.date_naive();
                match db::schedule(tx, id, paid_on, &received.metadata).await {
                    Ok(Some(shipment)) => {
                        tracing::info!(order_id = %id, %shipment, "shipment scheduled");
                    }
                    Ok(None) => tracing::debug!(order_id = %id, "already scheduled"),
                    Err(ShippingError::Database(error)) => return Err(error.into()),
                    Err(ShippingError::Outbox(error)) => return Err(error.into()),
                    // An OrderPaid always follows its OrderCreated on the same partition;
                    // without it there is no address to ship to.
                    Err(other) => return Err(HandlerError::Rejected(other.into())),
                }
            }
            _ => {}
        }
        Ok(())
    }
}
