//! What the checker reads: plain rows from each service's database and the processor's
//! ledger, with no behaviour, so the rules can be tested on hand-made snapshots.

use std::collections::BTreeMap;

use inventory_rules::ReservationStatus;
use notification_rules::{EmailStatus, Kind};
use order_rules::OrderStatus;
use payment_rules::{ChargeStatus, RefundStatus, TransactionKind, TransactionStatus};
use serde::{Deserialize, Serialize};
use shipping_rules::ShipmentStatus;

/// An order as the order service holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: String,
    pub status: OrderStatus,
    pub reason: Option<String>,
    pub total_minor: i64,
    pub refunded: bool,
    /// Quantity per SKU.
    pub lines: BTreeMap<String, i64>,
    /// The shipment the order service was told about (ShipmentScheduled), if any.
    pub shipment_id: Option<String>,
}

/// One row of the payment service's `payment_transactions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub order_id: String,
    pub kind: TransactionKind,
    pub status: TransactionStatus,
    pub amount_minor: i64,
    /// The processor's payment intent id, for successful charges.
    pub provider_reference: Option<String>,
}

/// The payment service's saga state of one order (`payments`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub order_id: String,
    pub charge_status: ChargeStatus,
    pub refund_status: RefundStatus,
}

/// The payment service's database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentDb {
    pub payments: Vec<Payment>,
    pub transactions: Vec<Transaction>,
}

/// One payment intent of the simulator's `/_sim/charges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerCharge {
    pub payment_intent: String,
    pub idempotency_key: String,
    #[serde(default)]
    pub description: Option<String>,
    pub amount: i64,
    /// `succeeded` or `failed`.
    pub status: String,
    #[serde(default)]
    pub amount_refunded: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRefund {
    pub payment_intent: String,
    pub amount: i64,
}

/// Everything the card processor did, as it tells it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub charges: Vec<LedgerCharge>,
    pub refunds: Vec<LedgerRefund>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stock {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
}

/// An order's reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: String,
    pub status: ReservationStatus,
    pub lines: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InventoryDb {
    pub stock: Vec<Stock>,
    pub reservations: Vec<Reservation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    pub id: String,
    pub order_id: String,
    pub status: ShipmentStatus,
}

/// A notice of the notification service, with its e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: String,
    pub order_id: Option<String>,
    pub kind: Kind,
    /// The event it came from; the mail folder names the e-mail after it.
    pub source_event_id: Option<String>,
    /// `None` when no e-mail row exists.
    pub email_status: Option<EmailStatus>,
}

/// Everything read in one round. A part is `None` when its source was not given, and the
/// rules that need it are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub orders: Vec<Order>,
    pub inventory: Option<InventoryDb>,
    pub payment: Option<PaymentDb>,
    pub ledger: Option<Ledger>,
    pub shipments: Option<Vec<Shipment>>,
    pub notifications: Option<Vec<Notification>>,
    /// File stems of the `.eml` files in the notification service's mail folder.
    pub mail_files: Option<Vec<String>>,
}
