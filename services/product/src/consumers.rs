//! The product service's reactions: the catalog's replica of inventory's stock levels, from
//! which browsing shows each variant's availability. The catalog itself changes only through
//! the service's own API (and `seed-demo`), and each change publishes the product's
//! ProductSnapshot through the outbox, in the transaction that saves it.

use events::{Event, StockLevelChanged};
use messaging::{EventHandler, HandlerError, ReceivedEvent};
use sqlx::PgConnection;

/// Topics the product service consumes: declared with its rules.
pub const TOPICS: &[&str] = product_rules::SUBSCRIPTIONS;

#[derive(Debug)]
pub struct StockLevelHandler;

impl EventHandler for StockLevelHandler {
    fn handles(&self, event: &Event) -> bool {
        product_rules::HANDLES.contains(&event.event_type())
    }

    /// The batch's last level of each SKU in one statement. SKUs are the topic's keys, so
    /// batches of different partitions never touch the same row and need no lock order.
    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[&ReceivedEvent],
    ) -> Result<(), HandlerError> {
        let levels: Vec<&StockLevelChanged> = events
            .iter()
            .filter_map(|received| match &received.event {
                Event::StockLevelChanged(level) => Some(level),
                _ => None,
            })
            .collect();
        Ok(crate::db::save_stock_levels(tx, &levels).await?)
    }
}
