//! The invariants, as pure functions of a [`Snapshot`].
//!
//! Each violation says whether it is *settling*: something a saga still in flight may resolve
//! by itself (an order not final yet, a refund not made yet), as opposed to a fact that no later
//! event can undo (a second charge, stock that does not add up). The checker keeps looking while
//! only settling violations remain, and gives up at once on a permanent one.
//!
//! The databases are read one after another, in the saga's causal order (order, inventory,
//! payment, shipping, notification, then the processor's ledger), so a later source is never
//! older than an earlier one. Rules that compare two sources are settling unless both facts can
//! never change again.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use inventory_rules::ReservationStatus;
use notification_rules::{EmailStatus, Kind};
use order_rules::OrderStatus;
use payment_rules::{ChargeStatus, RefundStatus, TransactionKind, TransactionStatus};
use serde::Serialize;
use shipping_rules::ShipmentStatus;

use crate::model::{Ledger, LedgerCharge, Order, Snapshot};

/// The promise a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    /// An order accepted with 202 is not in the order database.
    OrderMissing,
    /// An order has not reached a final state.
    OrderNotFinal,
    /// More than one successful charge for an order in the payment database.
    ChargedTwice,
    /// A charge of another amount than the order's total.
    ChargeAmount,
    /// A paid order without a successful charge.
    ChargeMissing,
    /// A paid order was refunded.
    RefundOfPaidOrder,
    /// A rejected or cancelled order keeps money: charged and not (fully) refunded.
    NetCharge,
    /// The payment service still has a charge or refund to make for a final order.
    PaymentUnsettled,
    /// A successful charge in the payment database for an order the order service never had.
    OrphanCharge,
    /// More than one successful charge for an order at the processor.
    LedgerChargedTwice,
    /// The processor has no successful charge for a paid order.
    LedgerChargeMissing,
    /// The processor refunded a paid order.
    LedgerRefundOfPaidOrder,
    /// The processor keeps money for a rejected or cancelled order.
    LedgerNetCharge,
    /// The payment database names a payment intent the processor does not know.
    PaymentUnknownToProcessor,
    /// A stock quantity is negative.
    StockNegative,
    /// More reserved than on hand.
    StockOverReserved,
    /// `reserved` differs from the sum of the live reservations.
    StockReservedMismatch,
    /// Initial stock differs from available + reserved + sold.
    StockNotConserved,
    /// A final order still holds reserved stock.
    ReservationOpen,
    /// A paid order whose stock was not sold.
    SaleMissing,
    /// A rejected or cancelled order whose stock stays sold.
    SaleOfUnpaidOrder,
    /// A reservation's lines differ from its order's lines.
    ReservationLinesMismatch,
    /// A paid order without a shipment.
    ShipmentMissing,
    /// More than one shipment for an order.
    ShipmentDuplicate,
    /// A shipment for an order that was never paid.
    ShipmentForUnpaidOrder,
    /// The order shows another shipment than the shipping service has.
    ShipmentMismatch,
    /// A notice the order's outcome calls for is missing.
    NotificationMissing,
    /// Two notices of one kind for one order.
    NotificationDuplicate,
    /// A notice the order's outcome does not call for.
    NotificationUnexpected,
    /// A notice without its e-mail, or whose e-mail is not sent (yet).
    EmailNotSent,
    /// An e-mail given up as unsendable.
    EmailFailed,
    /// An e-mail marked sent that is not in the mail folder.
    MailFileMissing,
    /// A file in the mail folder that no notice accounts for.
    MailFileUnexpected,
}

impl Invariant {
    /// The area of the promise: `orders`, `payments`, `stock` or `fulfilment`.
    pub fn family(self) -> &'static str {
        use Invariant as I;
        match self {
            I::OrderMissing | I::OrderNotFinal => "orders",
            I::ChargedTwice
            | I::ChargeAmount
            | I::ChargeMissing
            | I::RefundOfPaidOrder
            | I::NetCharge
            | I::PaymentUnsettled
            | I::OrphanCharge
            | I::LedgerChargedTwice
            | I::LedgerChargeMissing
            | I::LedgerRefundOfPaidOrder
            | I::LedgerNetCharge
            | I::PaymentUnknownToProcessor => "payments",
            I::StockNegative
            | I::StockOverReserved
            | I::StockReservedMismatch
            | I::StockNotConserved
            | I::ReservationOpen
            | I::SaleMissing
            | I::SaleOfUnpaidOrder
            | I::ReservationLinesMismatch => "stock",
            I::ShipmentMissing
            | I::ShipmentDuplicate
            | I::ShipmentForUnpaidOrder
            | I::ShipmentMismatch
            | I::NotificationMissing
            | I::NotificationDuplicate
            | I::NotificationUnexpected
            | I::EmailNotSent
            | I::EmailFailed
            | I::MailFileMissing
            | I::MailFileUnexpected => "fulfilment",
        }
    }

    /// The snake_case name used in JSON and tables.
    pub fn code(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// One broken promise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub invariant: Invariant,
    /// What it is about: `order <id>` or `sku <sku>`.
    pub subject: String,
    pub detail: String,
    /// May still resolve by itself (a saga in flight); `false` means no later event can fix it.
    pub settling: bool,
}

/// What the caller knows beyond the databases.
#[derive(Debug, Clone)]
pub struct Expectations {
    /// Order ids answered 202: each must exist.
    pub accepted: Vec<String>,
    /// Check only the accepted orders (otherwise every order in the order database).
    pub only_accepted: bool,
    /// Stock per SKU before any sale; SKUs left out are checked for everything but conservation.
    pub initial_stock: BTreeMap<String, i64>,
    /// Every notice's e-mail must have been sent.
    pub emails_sent: bool,
}

impl Default for Expectations {
    fn default() -> Self {
        Self {
            accepted: Vec::new(),
            only_accepted: false,
            initial_stock: BTreeMap::new(),
            emails_sent: true,
        }
    }
}

/// Counts of what was checked, for reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub orders: usize,
    pub accepted: usize,
    /// Orders per `status` or `status/reason`.
    pub statuses: BTreeMap<String, usize>,
    pub charges: Option<usize>,
    pub refunds: Option<usize>,
    pub ledger_charges: Option<usize>,
    pub ledger_refunds: Option<usize>,
    pub skus: Option<usize>,
    pub units_sold: Option<i64>,
    pub units_reserved: Option<i64>,
    pub shipments: Option<usize>,
    pub notifications: Option<usize>,
    pub emails_sent: Option<usize>,
    pub mail_files: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    pub violations: Vec<Violation>,
    pub summary: Summary,
}

/// Paid and keeping it: the order service's rule ([`OrderStatus::is_paid`]).
fn paid(order: &Order) -> bool {
    order.status.is_paid()
}

/// Rejected or cancelled ([`OrderStatus::is_unpaid_final`]).
fn unpaid_final(order: &Order) -> bool {
    order.status.is_unpaid_final()
}

/// Final as far as the saga goes: no service will move the order on by itself
/// ([`OrderStatus::is_settled`]; `shipped` and `delivered` follow only when people dispatch and
/// deliver the parcel). Without a shipping service a paid order is as far as it goes; with one,
/// it must go on to `shipping_scheduled`.
fn is_final(order: &Order, fulfilment: bool) -> bool {
    order.status.is_settled() || (!fulfilment && order.status == OrderStatus::Paid)
}

struct Found {
    violations: Vec<Violation>,
}

impl Found {
    fn order(&mut self, invariant: Invariant, order: &str, detail: String, settling: bool) {
        self.violations.push(Violation {
            invariant,
            subject: format!("order {order}"),
            detail,
            settling,
        });
    }

    fn sku(&mut self, invariant: Invariant, sku: &str, detail: String) {
        // Stock rows are read in one transaction: what they say holds at that instant.
        self.violations.push(Violation {
            invariant,
            subject: format!("sku {sku}"),
            detail,
            settling: false,
        });
    }
}

/// Checks every invariant the snapshot has the sources for.
pub fn evaluate(snapshot: &Snapshot, expect: &Expectations) -> Evaluation {
    let mut found = Found {
        violations: Vec::new(),
    };
    let accepted: BTreeSet<&str> = expect.accepted.iter().map(String::as_str).collect();
    let orders: Vec<&Order> = snapshot
        .orders
        .iter()
        .filter(|order| !expect.only_accepted || accepted.contains(order.id.as_str()))
        .collect();
    let known: BTreeSet<&str> = snapshot.orders.iter().map(|o| o.id.as_str()).collect();
    let fulfilment = snapshot.shipments.is_some();
    let mut summary = Summary {
        orders: orders.len(),
        accepted: accepted.len(),
        ..Summary::default()
    };

    for id in &accepted {
        if !known.contains(id) {
            found.order(
                Invariant::OrderMissing,
                id,
                "accepted with 202 but not in the order database".into(),
                false,
            );
        }
    }
    for order in &orders {
        let label = match &order.reason {
            Some(reason) => format!("{}/{reason}", order.status),
            None => order.status.as_str().to_owned(),
        };
        *summary.statuses.entry(label).or_default() += 1;
        if !is_final(order, fulfilment) {
            found.order(
                Invariant::OrderNotFinal,
                &order.id,
                format!("still {}", order.status),
                true,
            );
        }
    }

    if let Some(payment) = &snapshot.payment {
        check_payments(&mut found, &orders, &known, payment, expect, &mut summary);
    }
    if let Some(ledger) = &snapshot.ledger {
        check_ledger(&mut found, &orders, snapshot, ledger, &mut summary);
    }
    if let Some(inventory) = &snapshot.inventory {
        check_stock(&mut found, &orders, inventory, expect, &mut summary);
    }
    if let Some(shipments) = &snapshot.shipments {
        check_shipments(&mut found, &orders, shipments, &mut summary);
    }
    if let Some(notifications) = &snapshot.notifications {
        check_notifications(
            &mut found,
            &orders,
            snapshot,
            notifications,
            expect,
            &mut summary,
        );
    }

    let mut violations = found.violations;
    violations.sort_by(|a, b| {
        (a.settling, a.invariant, &a.subject).cmp(&(b.settling, b.invariant, &b.subject))
    });
    Evaluation {
        violations,
        summary,
    }
}

fn check_payments(
    found: &mut Found,
    orders: &[&Order],
    known: &BTreeSet<&str>,
    payment: &crate::model::PaymentDb,
    expect: &Expectations,
    summary: &mut Summary,
) {
    let mut charges: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut refunds: HashMap<&str, usize> = HashMap::new();
    for tx in &payment.transactions {
        if tx.status != TransactionStatus::Succeeded {
            continue;
        }
        match tx.kind {
            TransactionKind::Charge => charges
                .entry(tx.order_id.as_str())
                .or_default()
                .push(tx.amount_minor),
            TransactionKind::Refund => *refunds.entry(tx.order_id.as_str()).or_default() += 1,
        }
    }
    let states: HashMap<&str, &crate::model::Payment> = payment
        .payments
        .iter()
        .map(|p| (p.order_id.as_str(), p))
        .collect();
    let in_scope: BTreeSet<&str> = orders.iter().map(|o| o.id.as_str()).collect();
    summary.charges = Some(
        charges
            .iter()
            .filter(|(id, _)| in_scope.contains(*id))
            .map(|(_, amounts)| amounts.len())
            .sum(),
    );
    summary.refunds = Some(
        refunds
            .iter()
            .filter(|(id, _)| in_scope.contains(*id))
            .map(|(_, n)| n)
            .sum(),
    );

    for order in orders {
        let id = order.id.as_str();
        let charged = charges.get(id).map_or(&[][..], Vec::as_slice);
        let refunded = refunds.get(id).copied().unwrap_or(0);
        if charged.len() > 1 {
            found.order(
                Invariant::ChargedTwice,
                id,
                format!("{} successful charges: {charged:?}", charged.len()),
                false,
            );
        }
        for amount in charged {
            if *amount != order.total_minor {
                found.order(
                    Invariant::ChargeAmount,
                    id,
                    format!("charged {amount}, order total {}", order.total_minor),
                    false,
                );
            }
        }
        if paid(order) {
            if charged.is_empty() {
                found.order(
                    Invariant::ChargeMissing,
                    id,
                    format!("{} without a successful charge", order.status),
                    true,
                );
            }
            if refunded > 0 {
                found.order(
                    Invariant::RefundOfPaidOrder,
                    id,
                    format!("{} and refunded {refunded} time(s)", order.status),
                    false,
                );
            }
        }
        if unpaid_final(order) && charged.len() != refunded {
            found.order(
                Invariant::NetCharge,
                id,
                format!(
                    "{}: {} successful charge(s), {refunded} refund(s)",
                    order.status,
                    charged.len()
                ),
                charged.len() > refunded,
            );
        }
        if let Some(state) = states.get(id)
            && (paid(order) || unpaid_final(order))
            && (state.charge_status == ChargeStatus::Due
                || state.refund_status == RefundStatus::Due)
        {
            found.order(
                Invariant::PaymentUnsettled,
                id,
                format!(
                    "{} but the payment service has charge {} / refund {}",
                    order.status, state.charge_status, state.refund_status
                ),
                true,
            );
        }
    }
    if !expect.only_accepted {
        for (id, amounts) in &charges {
            if !known.contains(id) {
                found.order(
                    Invariant::OrphanCharge,
                    id,
                    format!(
                        "{} successful charge(s) for an unknown order",
                        amounts.len()
                    ),
                    true,
                );
            }
        }
    }
}

/// The processor's charges of each order: its idempotency key is the order id, its description
/// names the order, or the payment database points at it. A second charge under another key
/// is found by the description.
fn ledger_charges_by_order<'a>(
    orders: &[&Order],
    snapshot: &Snapshot,
    ledger: &'a Ledger,
) -> HashMap<String, Vec<&'a LedgerCharge>> {
    let ids: BTreeSet<&str> = orders.iter().map(|o| o.id.as_str()).collect();
    let mut referenced: HashMap<&str, &str> = HashMap::new();
    if let Some(payment) = &snapshot.payment {
        for tx in &payment.transactions {
            if let Some(reference) = &tx.provider_reference
                && tx.kind == TransactionKind::Charge
                && tx.status == TransactionStatus::Succeeded
            {
                referenced.insert(reference.as_str(), tx.order_id.as_str());
            }
        }
    }
    let mut by_order: HashMap<String, Vec<&LedgerCharge>> = HashMap::new();
    for charge in &ledger.charges {
        let described = charge
            .description
            .as_deref()
            .and_then(|d| d.strip_prefix("Bazaar order "));
        let owner = [
            Some(charge.idempotency_key.as_str()),
            described,
            referenced.get(charge.payment_intent.as_str()).copied(),
        ]
        .into_iter()
        .flatten()
        .find(|id| ids.contains(id));
        if let Some(owner) = owner {
            by_order.entry(owner.to_owned()).or_default().push(charge);
        }
    }
    by_order
}

fn check_ledger(
    found: &mut Found,
    orders: &[&Order],
    snapshot: &Snapshot,
    ledger: &Ledger,
    summary: &mut Summary,
) {
    let by_order = ledger_charges_by_order(orders, snapshot, ledger);
    let intents: BTreeSet<&str> = ledger
        .charges
        .iter()
        .map(|c| c.payment_intent.as_str())
        .collect();
    let mut succeeded_total = 0;
    let mut refunded_intents: BTreeSet<&str> = BTreeSet::new();
    for order in orders {
        let charges = by_order.get(&order.id).map_or(&[][..], Vec::as_slice);
        let succeeded: Vec<&&LedgerCharge> =
            charges.iter().filter(|c| c.status == "succeeded").collect();
        succeeded_total += succeeded.len();
        for charge in &succeeded {
            if charge.amount_refunded > 0 {
                refunded_intents.insert(charge.payment_intent.as_str());
            }
        }
        let id = order.id.as_str();
        if succeeded.len() > 1 {
            let list: Vec<&str> = succeeded
                .iter()
                .map(|c| c.payment_intent.as_str())
                .collect();
            found.order(
                Invariant::LedgerChargedTwice,
                id,
                format!("the processor charged {} times: {list:?}", succeeded.len()),
                false,
            );
        }
        if paid(order) {
            if succeeded.is_empty() {
                found.order(
                    Invariant::LedgerChargeMissing,
                    id,
                    format!(
                        "{} but the processor has no successful charge",
                        order.status
                    ),
                    true,
                );
            }
            for charge in &succeeded {
                if charge.amount_refunded > 0 {
                    found.order(
                        Invariant::LedgerRefundOfPaidOrder,
                        id,
                        format!(
                            "{} but {} of {} refunded on {}",
                            order.status,
                            charge.amount_refunded,
                            charge.amount,
                            charge.payment_intent
                        ),
                        false,
                    );
                }
            }
        }
        if unpaid_final(order) {
            let kept: i64 = succeeded.iter().map(|c| c.amount - c.amount_refunded).sum();
            if kept != 0 {
                found.order(
                    Invariant::LedgerNetCharge,
                    id,
                    format!("{} but the processor keeps {kept}", order.status),
                    kept > 0,
                );
            }
        }
        if let Some(payment) = &snapshot.payment {
            for tx in payment.transactions.iter().filter(|tx| tx.order_id == id) {
                if let Some(reference) = &tx.provider_reference
                    && tx.kind == TransactionKind::Charge
                    && tx.status == TransactionStatus::Succeeded
                    && !intents.contains(reference.as_str())
                {
                    found.order(
                        Invariant::PaymentUnknownToProcessor,
                        id,
                        format!("the payment database names {reference}, unknown to the processor"),
                        false,
                    );
                }
            }
        }
    }
    summary.ledger_charges = Some(succeeded_total);
    summary.ledger_refunds = Some(
        ledger
            .refunds
            .iter()
            .filter(|r| refunded_intents.contains(r.payment_intent.as_str()))
            .count(),
    );
}

fn check_stock(
    found: &mut Found,
    orders: &[&Order],
    inventory: &crate::model::InventoryDb,
    expect: &Expectations,
    summary: &mut Summary,
) {
    let mut live: BTreeMap<&str, i64> = BTreeMap::new();
    let mut sold: BTreeMap<&str, i64> = BTreeMap::new();
    for reservation in &inventory.reservations {
        let bucket = match reservation.status {
            ReservationStatus::Reserved => &mut live,
            ReservationStatus::Committed => &mut sold,
            ReservationStatus::Released | ReservationStatus::Expired => continue,
        };
        for (sku, quantity) in &reservation.lines {
            *bucket.entry(sku.as_str()).or_default() += quantity;
        }
    }
    summary.skus = Some(inventory.stock.len());
    summary.units_sold = Some(sold.values().sum());
    summary.units_reserved = Some(inventory.stock.iter().map(|s| s.reserved).sum());
    let stocked: BTreeSet<&str> = inventory.stock.iter().map(|s| s.sku.as_str()).collect();
    for stock in &inventory.stock {
        let sku = stock.sku.as_str();
        if stock.on_hand < 0 || stock.reserved < 0 {
            found.sku(
                Invariant::StockNegative,
                sku,
                format!("on hand {}, reserved {}", stock.on_hand, stock.reserved),
            );
        }
        if stock.reserved > stock.on_hand {
            found.sku(
                Invariant::StockOverReserved,
                sku,
                format!(
                    "reserved {} of {} on hand (available {})",
                    stock.reserved,
                    stock.on_hand,
                    stock.on_hand - stock.reserved
                ),
            );
        }
        let reserved_by_orders = live.get(sku).copied().unwrap_or(0);
        if stock.reserved != reserved_by_orders {
            found.sku(
                Invariant::StockReservedMismatch,
                sku,
                format!(
                    "reserved {} but live reservations hold {reserved_by_orders}",
                    stock.reserved
                ),
            );
        }
        if let Some(initial) = expect.initial_stock.get(sku) {
            let sold = sold.get(sku).copied().unwrap_or(0);
            let available = stock.on_hand - stock.reserved;
            if *initial != available + stock.reserved + sold {
                found.sku(
                    Invariant::StockNotConserved,
                    sku,
                    format!(
                        "initial {initial} != available {available} + reserved {} + sold {sold}",
                        stock.reserved
                    ),
                );
            }
        }
    }
    for (sku, initial) in &expect.initial_stock {
        if !stocked.contains(sku.as_str()) {
            found.sku(
                Invariant::StockNotConserved,
                sku,
                format!("initial {initial} but the SKU is not in the inventory database"),
            );
        }
    }

    let reservations: HashMap<&str, &crate::model::Reservation> = inventory
        .reservations
        .iter()
        .map(|r| (r.order_id.as_str(), r))
        .collect();
    for order in orders {
        let id = order.id.as_str();
        let reservation = reservations.get(id);
        let status = reservation.map(|r| r.status);
        if let Some(reservation) = reservation
            && reservation.lines != order.lines
        {
            found.order(
                Invariant::ReservationLinesMismatch,
                id,
                format!(
                    "reserved {:?}, ordered {:?}",
                    reservation.lines, order.lines
                ),
                false,
            );
        }
        if (paid(order) || unpaid_final(order)) && status == Some(ReservationStatus::Reserved) {
            found.order(
                Invariant::ReservationOpen,
                id,
                format!("{} but its stock is still reserved", order.status),
                true,
            );
        }
        if paid(order) && status != Some(ReservationStatus::Committed) {
            found.order(
                Invariant::SaleMissing,
                id,
                format!(
                    "{} but its reservation is {}",
                    order.status,
                    status.map_or("missing", ReservationStatus::as_str)
                ),
                true,
            );
        }
        if unpaid_final(order) && status == Some(ReservationStatus::Committed) {
            found.order(
                Invariant::SaleOfUnpaidOrder,
                id,
                format!("{} but its stock stays sold", order.status),
                true,
            );
        }
    }
}

fn check_shipments(
    found: &mut Found,
    orders: &[&Order],
    shipments: &[crate::model::Shipment],
    summary: &mut Summary,
) {
    let mut by_order: HashMap<&str, Vec<&crate::model::Shipment>> = HashMap::new();
    for shipment in shipments {
        by_order
            .entry(shipment.order_id.as_str())
            .or_default()
            .push(shipment);
    }
    let mut count = 0;
    for order in orders {
        let id = order.id.as_str();
        let mine = by_order.get(id).map_or(&[][..], Vec::as_slice);
        count += mine.len();
        if mine.len() > 1 {
            found.order(
                Invariant::ShipmentDuplicate,
                id,
                format!("{} shipments", mine.len()),
                false,
            );
        }
        if paid(order) && mine.is_empty() {
            found.order(
                Invariant::ShipmentMissing,
                id,
                format!("{} without a shipment", order.status),
                true,
            );
        }
        if unpaid_final(order) && !mine.is_empty() {
            found.order(
                Invariant::ShipmentForUnpaidOrder,
                id,
                format!("{} but shipment {} exists", order.status, mine[0].id),
                false,
            );
        }
        if let (Some(shown), [shipment]) = (&order.shipment_id, mine)
            && *shown != shipment.id
        {
            found.order(
                Invariant::ShipmentMismatch,
                id,
                format!(
                    "the order shows shipment {shown}, the shipping service has {}",
                    shipment.id
                ),
                false,
            );
        }
    }
    summary.shipments = Some(count);
}

fn check_notifications(
    found: &mut Found,
    orders: &[&Order],
    snapshot: &Snapshot,
    notifications: &[crate::model::Notification],
    expect: &Expectations,
    summary: &mut Summary,
) {
    let mut by_order: HashMap<&str, Vec<&crate::model::Notification>> = HashMap::new();
    for notification in notifications {
        if let Some(order) = &notification.order_id {
            by_order
                .entry(order.as_str())
                .or_default()
                .push(notification);
        }
    }
    let refunded: BTreeSet<&str> = snapshot
        .payment
        .iter()
        .flat_map(|p| &p.transactions)
        .filter(|tx| {
            tx.kind == TransactionKind::Refund && tx.status == TransactionStatus::Succeeded
        })
        .map(|tx| tx.order_id.as_str())
        .collect();
    let shipment_status: HashMap<&str, ShipmentStatus> = snapshot
        .shipments
        .iter()
        .flatten()
        .map(|s| (s.order_id.as_str(), s.status))
        .collect();
    let files: Option<BTreeSet<&str>> = snapshot
        .mail_files
        .as_ref()
        .map(|files| files.iter().map(String::as_str).collect());

    let mut counted = 0;
    let mut sent = 0;
    for order in orders {
        let id = order.id.as_str();
        let mine = by_order.get(id).map_or(&[][..], Vec::as_slice);
        counted += mine.len();
        let mut kinds: BTreeMap<Kind, usize> = BTreeMap::new();
        for notification in mine {
            *kinds.entry(notification.kind).or_default() += 1;
        }
        for (kind, count) in &kinds {
            if *count > 1 {
                found.order(
                    Invariant::NotificationDuplicate,
                    id,
                    format!("{count} notices of kind {kind}"),
                    false,
                );
            }
        }
        // The notices the order's outcome calls for: the notification service's rule.
        let (expected, forbidden) = notification_rules::notices_for(
            order.status,
            order.refunded || refunded.contains(id),
            shipment_status.get(id).copied(),
        );
        if is_final(order, snapshot.shipments.is_some()) {
            for kind in &expected {
                if !kinds.contains_key(kind) {
                    found.order(
                        Invariant::NotificationMissing,
                        id,
                        format!("{}: no {kind} notice", order.status),
                        true,
                    );
                }
            }
        }
        for kind in kinds.keys() {
            if forbidden.contains(kind) {
                found.order(
                    Invariant::NotificationUnexpected,
                    id,
                    format!("{} but notified {kind}", order.status),
                    false,
                );
            } else if is_final(order, snapshot.shipments.is_some()) && !expected.contains(kind) {
                found.order(
                    Invariant::NotificationUnexpected,
                    id,
                    format!("{} but notified {kind}", order.status),
                    true,
                );
            }
        }
        for notification in mine {
            match notification.email_status {
                Some(EmailStatus::Sent) => {
                    sent += 1;
                    if let (Some(files), Some(stem)) = (&files, &notification.source_event_id)
                        && !files.contains(stem.as_str())
                    {
                        found.order(
                            Invariant::MailFileMissing,
                            id,
                            format!(
                                "{} e-mail sent but {stem}.eml is not in the mail folder",
                                notification.kind
                            ),
                            false,
                        );
                    }
                }
                Some(EmailStatus::Failed) => found.order(
                    Invariant::EmailFailed,
                    id,
                    format!("{} e-mail given up", notification.kind),
                    false,
                ),
                Some(status) if expect.emails_sent => found.order(
                    Invariant::EmailNotSent,
                    id,
                    format!("{} e-mail still {status}", notification.kind),
                    true,
                ),
                Some(_) => {}
                None => found.order(
                    Invariant::EmailNotSent,
                    id,
                    format!("{} notice has no e-mail", notification.kind),
                    false,
                ),
            }
        }
    }
    summary.notifications = Some(counted);
    summary.emails_sent = Some(sent);
    if let Some(files) = &files {
        summary.mail_files = Some(files.len());
        if !expect.only_accepted {
            let stems: BTreeSet<&str> = notifications
                .iter()
                .filter_map(|n| n.source_event_id.as_deref())
                .collect();
            for file in files {
                if !stems.contains(file) {
                    found.violations.push(Violation {
                        invariant: Invariant::MailFileUnexpected,
                        subject: format!("mail {file}.eml"),
                        detail: "no notice accounts for this e-mail".into(),
                        settling: true,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        InventoryDb, LedgerRefund, Notification, Payment, PaymentDb, Reservation, Shipment, Stock,
        Transaction,
    };

    fn lines(entries: &[(&str, i64)]) -> BTreeMap<String, i64> {
        entries.iter().map(|(s, q)| ((*s).to_owned(), *q)).collect()
    }

    use OrderStatus::{Cancelled, Pending, Rejected, ShippingScheduled};
    use TransactionKind::{Charge, Refund};
    use TransactionStatus::{Declined, Succeeded};

    fn order(id: &str, status: OrderStatus, reason: Option<&str>, total: i64, sku: &str) -> Order {
        Order {
            id: id.into(),
            status,
            reason: reason.map(str::to_owned),
            total_minor: total,
            refunded: false,
            lines: lines(&[(sku, 1)]),
            shipment_id: None,
        }
    }

    fn tx(
        order: &str,
        kind: TransactionKind,
        status: TransactionStatus,
        amount: i64,
        reference: Option<&str>,
    ) -> Transaction {
        Transaction {
            order_id: order.into(),
            kind,
            status,
            amount_minor: amount,
            provider_reference: reference.map(str::to_owned),
        }
    }

    fn intent(pi: &str, order: &str, amount: i64, status: &str, refunded: i64) -> LedgerCharge {
        LedgerCharge {
            payment_intent: pi.into(),
            idempotency_key: order.into(),
            description: Some(format!("Bazaar order {order}")),
            amount,
            status: status.into(),
            amount_refunded: refunded,
        }
    }

    fn notice(order: &str, kind: Kind) -> Notification {
        Notification {
            id: format!("n-{order}-{kind}"),
            order_id: Some(order.into()),
            kind,
            source_event_id: Some(format!("e-{order}-{kind}")),
            email_status: Some(EmailStatus::Sent),
        }
    }

    fn reservation(order: &str, status: ReservationStatus, entries: &[(&str, i64)]) -> Reservation {
        Reservation {
            order_id: order.into(),
            status,
            lines: lines(entries),
        }
    }

    /// A settled little world: A shipped, B rejected, C declined, D cancelled and refunded.
    /// TEE started with 10 units and RARE with none.
    fn world() -> (Snapshot, Expectations) {
        let mut a = order("A", ShippingScheduled, None, 4000, "TEE");
        a.lines = lines(&[("TEE", 2)]);
        a.shipment_id = Some("s-A".into());
        let b = order("B", Rejected, Some("out_of_stock"), 100, "RARE");
        let c = order("C", Cancelled, Some("payment_declined"), 2000, "TEE");
        let mut d = order("D", Cancelled, Some("customer_request"), 2000, "TEE");
        d.refunded = true;
        let notifications = vec![
            notice("A", Kind::OrderPaid),
            notice("A", Kind::ShipmentScheduled),
            notice("B", Kind::OrderRejected),
            notice("C", Kind::OrderCancelled),
            notice("D", Kind::OrderCancelled),
            notice("D", Kind::PaymentRefunded),
        ];
        let mail_files = notifications
            .iter()
            .filter_map(|n| n.source_event_id.clone())
            .collect();
        let snapshot = Snapshot {
            orders: vec![a, b, c, d],
            inventory: Some(InventoryDb {
                stock: vec![
                    Stock {
                        sku: "TEE".into(),
                        on_hand: 8,
                        reserved: 0,
                    },
                    Stock {
                        sku: "RARE".into(),
                        on_hand: 0,
                        reserved: 0,
                    },
                ],
                reservations: vec![
                    reservation("A", ReservationStatus::Committed, &[("TEE", 2)]),
                    reservation("C", ReservationStatus::Released, &[("TEE", 1)]),
                    reservation("D", ReservationStatus::Released, &[("TEE", 1)]),
                ],
            }),
            payment: Some(PaymentDb {
                payments: ["A", "B", "C", "D"]
                    .iter()
                    .map(|id| Payment {
                        order_id: (*id).into(),
                        charge_status: ChargeStatus::Succeeded,
                        refund_status: RefundStatus::None,
                    })
                    .collect(),
                transactions: vec![
                    tx("A", Charge, Succeeded, 4000, Some("pi_A")),
                    tx("C", Charge, Declined, 2000, Some("card_declined")),
                    tx("D", Charge, Succeeded, 2000, Some("pi_D")),
                    tx("D", Refund, Succeeded, 2000, None),
                ],
            }),
            ledger: Some(Ledger {
                charges: vec![
                    intent("pi_A", "A", 4000, "succeeded", 0),
                    intent("pi_C", "C", 2000, "failed", 0),
                    intent("pi_D", "D", 2000, "succeeded", 2000),
                ],
                refunds: vec![LedgerRefund {
                    payment_intent: "pi_D".into(),
                    amount: 2000,
                }],
            }),
            shipments: Some(vec![Shipment {
                id: "s-A".into(),
                order_id: "A".into(),
                status: ShipmentStatus::Scheduled,
            }]),
            notifications: Some(notifications),
            mail_files: Some(mail_files),
        };
        let expect = Expectations {
            accepted: vec!["A".into(), "B".into(), "C".into(), "D".into()],
            initial_stock: [("TEE".to_owned(), 10), ("RARE".to_owned(), 0)].into(),
            ..Expectations::default()
        };
        (snapshot, expect)
    }

    fn found(snapshot: &Snapshot, expect: &Expectations) -> Vec<(Invariant, String, bool)> {
        evaluate(snapshot, expect)
            .violations
            .into_iter()
            .map(|v| (v.invariant, v.subject, v.settling))
            .collect()
    }

    fn order_of<'a>(snapshot: &'a mut Snapshot, id: &str) -> &'a mut Order {
        snapshot
            .orders
            .iter_mut()
            .find(|o| o.id == id)
            .expect("order")
    }

    #[test]
    fn a_settled_world_keeps_every_promise() {
        let (snapshot, expect) = world();
        let evaluation = evaluate(&snapshot, &expect);
        assert_eq!(evaluation.violations, vec![]);
        let summary = evaluation.summary;
        assert_eq!(summary.orders, 4);
        assert_eq!(summary.statuses["cancelled/customer_request"], 1);
        assert_eq!(summary.statuses["shipping_scheduled"], 1);
        assert_eq!((summary.charges, summary.refunds), (Some(2), Some(1)));
        assert_eq!(
            (summary.ledger_charges, summary.ledger_refunds),
            (Some(2), Some(1))
        );
        assert_eq!(
            (summary.units_sold, summary.units_reserved),
            (Some(2), Some(0))
        );
        assert_eq!(summary.shipments, Some(1));
        assert_eq!(
            (summary.notifications, summary.emails_sent),
            (Some(6), Some(6))
        );
        assert_eq!(summary.mail_files, Some(6));
    }

    #[test]
    fn a_lost_order_is_permanent_and_a_pending_one_is_settling() {
        let (mut snapshot, mut expect) = world();
        expect.accepted.push("LOST".into());
        snapshot.orders.push(order("P", Pending, None, 10, "TEE"));
        assert_eq!(
            found(&snapshot, &expect),
            vec![
                (Invariant::OrderMissing, "order LOST".into(), false),
                (Invariant::OrderNotFinal, "order P".into(), true),
            ]
        );
    }

    #[test]
    fn paid_is_final_only_without_a_shipping_service() {
        let (mut snapshot, expect) = world();
        let a = order_of(&mut snapshot, "A");
        a.status = OrderStatus::Paid;
        a.shipment_id = None;
        snapshot.shipments = Some(vec![]);
        snapshot.notifications = None;
        let with_shipping = found(&snapshot, &expect);
        assert!(with_shipping.contains(&(Invariant::OrderNotFinal, "order A".into(), true)));
        assert!(with_shipping.contains(&(Invariant::ShipmentMissing, "order A".into(), true)));
        snapshot.shipments = None;
        assert_eq!(found(&snapshot, &expect), vec![]);
    }

    #[test]
    fn a_second_charge_is_found_in_the_database_and_at_the_processor() {
        let (mut snapshot, expect) = world();
        let payment = snapshot.payment.as_mut().expect("payment");
        payment
            .transactions
            .push(tx("A", Charge, Succeeded, 4000, Some("pi_A2")));
        let ledger = snapshot.ledger.as_mut().expect("ledger");
        // Under another idempotency key: found by its description.
        let mut again = intent("pi_A2", "A", 4000, "succeeded", 0);
        again.idempotency_key = "retry-A".into();
        ledger.charges.push(again);
        assert_eq!(
            found(&snapshot, &expect),
            vec![
                (Invariant::ChargedTwice, "order A".into(), false),
                (Invariant::LedgerChargedTwice, "order A".into(), false),
            ]
        );
    }

    #[test]
    fn money_kept_for_a_cancelled_order_settles_until_refunded() {
        let (mut snapshot, expect) = world();
        let payment = snapshot.payment.as_mut().expect("payment");
        payment.transactions.retain(|t| t.kind != Refund);
        payment.payments[3].refund_status = RefundStatus::Due;
        let ledger = snapshot.ledger.as_mut().expect("ledger");
        ledger.charges[2].amount_refunded = 0;
        ledger.refunds.clear();
        let violations = found(&snapshot, &expect);
        assert_eq!(
            violations,
            vec![
                (Invariant::NetCharge, "order D".into(), true),
                (Invariant::PaymentUnsettled, "order D".into(), true),
                (Invariant::LedgerNetCharge, "order D".into(), true),
            ]
        );
    }

    #[test]
    fn a_refunded_paid_order_and_a_wrong_amount_are_permanent() {
        let (mut snapshot, expect) = world();
        let payment = snapshot.payment.as_mut().expect("payment");
        payment.transactions[0].amount_minor = 3999;
        payment
            .transactions
            .push(tx("A", Refund, Succeeded, 3999, None));
        snapshot.ledger.as_mut().expect("ledger").charges[0].amount_refunded = 10;
        assert_eq!(
            found(&snapshot, &expect),
            vec![
                (Invariant::ChargeAmount, "order A".into(), false),
                (Invariant::RefundOfPaidOrder, "order A".into(), false),
                (Invariant::LedgerRefundOfPaidOrder, "order A".into(), false),
            ]
        );
    }

    #[test]
    fn a_paid_order_the_processor_never_charged_is_found() {
        let (mut snapshot, expect) = world();
        snapshot.ledger.as_mut().expect("ledger").charges.remove(0);
        assert_eq!(
            found(&snapshot, &expect),
            vec![
                (
                    Invariant::PaymentUnknownToProcessor,
                    "order A".into(),
                    false
                ),
                (Invariant::LedgerChargeMissing, "order A".into(), true),
            ]
        );
    }

    #[test]
    fn stock_must_add_up() {
        let (mut snapshot, expect) = world();
        let inventory = snapshot.inventory.as_mut().expect("inventory");
        inventory.stock[0].on_hand = 9;
        inventory.stock[1] = Stock {
            sku: "RARE".into(),
            on_hand: -1,
            reserved: 1,
        };
        assert_eq!(
            found(&snapshot, &expect),
            vec![
                (Invariant::StockNegative, "sku RARE".into(), false),
                (Invariant::StockOverReserved, "sku RARE".into(), false),
                (Invariant::StockReservedMismatch, "sku RARE".into(), false),
                (Invariant::StockNotConserved, "sku RARE".into(), false),
                (Invariant::StockNotConserved, "sku TEE".into(), false),
            ]
        );
    }

    #[test]
    fn live_reservations_count_as_reserved_and_final_orders_hold_none() {
        let (mut snapshot, mut expect) = world();
        snapshot.orders.push(order("P", Pending, None, 2000, "TEE"));
        expect.accepted.push("P".into());
        let inventory = snapshot.inventory.as_mut().expect("inventory");
        inventory
            .reservations
            .push(reservation("P", ReservationStatus::Reserved, &[("TEE", 1)]));
        inventory.stock[0].reserved = 1;
        // A pending order holding stock is fine: only its not being final is reported.
        assert_eq!(
            found(&snapshot, &expect),
            vec![(Invariant::OrderNotFinal, "order P".into(), true)]
        );
        let inventory = snapshot.inventory.as_mut().expect("inventory");
        inventory.reservations[2].status = ReservationStatus::Committed; // D: cancelled, yet sold
        inventory.stock[0].on_hand -= 1;
        inventory.reservations[1].status = ReservationStatus::Reserved; // C: declined, yet reserved
        inventory.stock[0].reserved += 1;
        assert_eq!(
            found(&snapshot, &expect),
            vec![
                (Invariant::OrderNotFinal, "order P".into(), true),
                (Invariant::ReservationOpen, "order C".into(), true),
                (Invariant::SaleOfUnpaidOrder, "order D".into(), true),
            ]
        );
    }

    #[test]
    fn a_reservation_must_match_its_order() {
        let (mut snapshot, expect) = world();
        let inventory = snapshot.inventory.as_mut().expect("inventory");
        inventory.reservations[0].lines = lines(&[("TEE", 1), ("RARE", 1)]);
        inventory.reservations[0].status = ReservationStatus::Released;
        let violations = found(&snapshot, &expect);
        assert!(violations.contains(&(
            Invariant::ReservationLinesMismatch,
            "order A".into(),
            false
        )));
        assert!(violations.contains(&(Invariant::SaleMissing, "order A".into(), true)));
    }

    #[test]
    fn one_shipment_per_paid_order_and_none_for_others() {
        let (mut snapshot, expect) = world();
        let shipments = snapshot.shipments.as_mut().expect("shipments");
        shipments.push(Shipment {
            id: "s-A2".into(),
            order_id: "A".into(),
            status: ShipmentStatus::Scheduled,
        });
        shipments.push(Shipment {
            id: "s-C".into(),
            order_id: "C".into(),
            status: ShipmentStatus::Scheduled,
        });
        assert_eq!(
            found(&snapshot, &expect),
            vec![
                (Invariant::ShipmentDuplicate, "order A".into(), false),
                (Invariant::ShipmentForUnpaidOrder, "order C".into(), false),
            ]
        );
        let shipments = snapshot.shipments.as_mut().expect("shipments");
        shipments.clear();
        shipments.push(Shipment {
            id: "s-other".into(),
            order_id: "A".into(),
            status: ShipmentStatus::Scheduled,
        });
        assert_eq!(
            found(&snapshot, &expect),
            vec![(Invariant::ShipmentMismatch, "order A".into(), false)]
        );
    }

    #[test]
    fn each_outcome_has_its_notices_once() {
        let (mut snapshot, expect) = world();
        let notifications = snapshot.notifications.as_mut().expect("notices");
        notifications
            .retain(|n| !(n.order_id.as_deref() == Some("D") && n.kind == Kind::PaymentRefunded));
        let mut twice = notice("B", Kind::OrderRejected);
        twice.id = "n-B-again".into();
        notifications.push(twice);
        notifications.push(notice("C", Kind::OrderPaid));
        let files = snapshot.mail_files.as_mut().expect("files");
        files.push("e-C-order_paid".into());
        assert_eq!(
            found(&snapshot, &expect),
            vec![
                (Invariant::NotificationDuplicate, "order B".into(), false),
                (Invariant::NotificationUnexpected, "order C".into(), false),
                (Invariant::NotificationMissing, "order D".into(), true),
                (
                    Invariant::MailFileUnexpected,
                    "mail e-D-payment_refunded.eml".into(),
                    true
                ),
            ]
        );
    }

    #[test]
    fn e_mails_must_be_sent_and_in_the_mail_folder() {
        let (mut snapshot, mut expect) = world();
        let notifications = snapshot.notifications.as_mut().expect("notices");
        notifications[0].email_status = Some(EmailStatus::Pending);
        notifications[1].email_status = Some(EmailStatus::Failed);
        notifications[2].email_status = None;
        let files = snapshot.mail_files.as_mut().expect("files");
        files.retain(|f| f != "e-C-order_cancelled");
        assert_eq!(
            found(&snapshot, &expect),
            vec![
                (Invariant::EmailNotSent, "order B".into(), false),
                (Invariant::EmailFailed, "order A".into(), false),
                (Invariant::MailFileMissing, "order C".into(), false),
                (Invariant::EmailNotSent, "order A".into(), true),
            ]
        );
        expect.emails_sent = false;
        assert!(!found(&snapshot, &expect).contains(&(
            Invariant::EmailNotSent,
            "order A".into(),
            true
        )));
    }

    #[test]
    fn only_the_accepted_orders_are_checked_when_asked() {
        let (mut snapshot, mut expect) = world();
        snapshot
            .orders
            .push(order("OTHER", Pending, None, 1, "TEE"));
        expect.only_accepted = true;
        assert_eq!(found(&snapshot, &expect), vec![]);
        expect.only_accepted = false;
        assert_eq!(
            found(&snapshot, &expect),
            vec![(Invariant::OrderNotFinal, "order OTHER".into(), true)]
        );
    }

    #[test]
    fn a_charge_for_an_order_nobody_knows_is_reported_in_full_scope() {
        let (mut snapshot, expect) = world();
        snapshot
            .payment
            .as_mut()
            .expect("payment")
            .transactions
            .push(tx("GHOST", Charge, Succeeded, 5, Some("pi_G")));
        assert_eq!(
            found(&snapshot, &expect),
            vec![(Invariant::OrphanCharge, "order GHOST".into(), true)]
        );
    }

    #[test]
    fn every_invariant_has_a_family_and_a_code() {
        assert_eq!(Invariant::ChargedTwice.code(), "charged_twice");
        assert_eq!(Invariant::StockNotConserved.family(), "stock");
        assert_eq!(Invariant::MailFileUnexpected.family(), "fulfilment");
    }
}
