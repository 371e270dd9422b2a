//! The order service's database, by area: the catalog replica, carts, orders and their status,
//! and the shipments shown on orders. Loading and storing only: what changes is decided by
//! `order_rules`, in `crate::consumers`.

mod cart;
mod catalog;
mod orders;
mod shipments;

pub use cart::{CartLine, cart, clear_cart, remove_cart_item, set_cart_item};
pub use catalog::{apply_snapshot, price_lines};
pub use orders::{
    Existing, NewOrder, OrderLineRow, OrderRow, StatusChange, any_overdue, find_by_idempotency_key,
    insert_order, lines_of, lock_order, lock_states, order_of_user, orders_of_user, overdue,
    past_deadline, save, status_changes, store,
};
pub use shipments::{ShipmentRow, save_shipments, shipments_known, shipments_of};

use messaging::outbox;
use sqlx::migrate::Migrator;

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
