//! The order service's rules: checkout, and what moves an order's status forward.
//!
//! The checkout saga is choreographed: inventory, payment and shipping react to events and
//! publish their own. This crate is the order service's part of it, as plain functions from
//! (current state, what happened) to (new state, events to publish). No Kafka, no database:
//! Cargo keeps this crate free of them, and the service, the CLI, the invariant checker and the
//! saga simulator all use it.
//!
//! The rules:
//! - An order is `pending` until its stock is committed and its payment captured; then `paid`.
//! - Out of stock: `rejected` (reason `out_of_stock`, naming the SKU).
//! - Payment declined, reservation expired, deadline passed or customer request while pending:
//!   `cancelled` with the reason; `OrderCancelled` tells the others to compensate.
//! - A paid order moves to `shipping_scheduled` when its shipment is booked, to `shipped` when
//!   the shipment is dispatched, and to `delivered` (what a shop calls completed) when it is
//!   delivered.
//! - Statuses only move forward: late, duplicate or out-of-order events never move an order
//!   back, and a final order ignores everything but the refund record.
//! - The order shows its shipment as the shipping service reports it: carrier, tracking number
//!   and pick-up date from ShipmentScheduled, then dispatched and delivered. Its status, too,
//!   only moves forward.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use events::{
    Event, EventType, OrderCancelled, OrderCreated, OrderLine, OrderPaid, OrderRejected,
    PostalAddress,
};
use serde::{Deserialize, Serialize};
pub use shipping_rules::ShipmentStatus;

/// The service these rules belong to (its consumer group, database and CLI name).
pub const SERVICE: &str = "order";

/// The event types the order service does something with: the catalog's snapshots, its inputs
/// ([`OrderInput::from_event`]) and the shipment events it shows ([`shipment_order`]). Its
/// consumer passes over the rest of what its topics carry.
pub const HANDLES: &[EventType] = &[
    EventType::ProductSnapshot,
    EventType::StockReservationFailed,
    EventType::StockCommitted,
    EventType::ReservationExpired,
    EventType::PaymentSucceeded,
    EventType::PaymentFailed,
    EventType::PaymentRefunded,
    EventType::ShipmentScheduled,
    EventType::ShipmentDispatched,
    EventType::ShipmentDelivered,
];

/// The topics the order service consumes: the catalog's snapshots (its replica), and every
/// topic carrying an event [`OrderInput::from_event`] or [`shipment_order`] reacts to.
pub const SUBSCRIPTIONS: &[&str] = &[
    "product-snapshots",
    "inventory-events",
    "payment-events",
    "shipment-events",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Paid,
    ShippingScheduled,
    Shipped,
    Delivered,
    Rejected,
    Cancelled,
}

impl OrderStatus {
    /// Every status, in the order an order can go through them.
    pub const ALL: [OrderStatus; 7] = [
        Self::Pending,
        Self::Paid,
        Self::ShippingScheduled,
        Self::Shipped,
        Self::Delivered,
        Self::Rejected,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::ShippingScheduled => "shipping_scheduled",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }

    /// No event changes the status of an order in a final state.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Rejected | Self::Cancelled)
    }

    /// The saga is over: no service moves the order on by itself any more. A final order, or
    /// one whose shipment is booked: it moves on to `shipped` and `delivered` only as people
    /// dispatch and deliver the parcel, which may take days.
    pub fn is_settled(self) -> bool {
        self.is_final() || matches!(self, Self::ShippingScheduled | Self::Shipped)
    }

    /// The customer paid and keeps paying: stock committed and payment captured.
    pub fn is_paid(self) -> bool {
        matches!(
            self,
            Self::Paid | Self::ShippingScheduled | Self::Shipped | Self::Delivered
        )
    }

    /// Final without a sale: nothing may stay charged, reserved or sold.
    pub fn is_unpaid_final(self) -> bool {
        self.is_final() && !self.is_paid()
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| format!("unknown order status {text:?}"))
    }
}

/// Why an order was cancelled or rejected.
pub mod reasons {
    pub const OUT_OF_STOCK: &str = "out_of_stock";
    pub const PAYMENT_DECLINED: &str = "payment_declined";
    pub const TIMEOUT: &str = "timeout";
    pub const CUSTOMER_REQUEST: &str = "customer_request";
}

/// What the order service knows of one order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrderState {
    pub status: Option<OrderStatus>,
    pub reason: Option<String>,
    /// The SKU that was out of stock, for a rejected order.
    pub rejected_sku: Option<String>,
    pub stock_committed: bool,
    pub payment_captured: bool,
    pub refunded: bool,
}

impl OrderState {
    pub fn pending() -> Self {
        Self {
            status: Some(OrderStatus::Pending),
            ..Self::default()
        }
    }

    pub fn status(&self) -> OrderStatus {
        self.status.unwrap_or(OrderStatus::Pending)
    }
}

/// Something that happened to an order: an event from another service, or a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderInput {
    StockReservationFailed { sku: String },
    StockCommitted,
    ReservationExpired,
    PaymentSucceeded,
    PaymentFailed,
    PaymentRefunded,
    ShipmentScheduled,
    ShipmentDispatched,
    ShipmentDelivered,
    CustomerCancelled,
    DeadlinePassed,
}

impl OrderInput {
    /// The order an event is about and the input it stands for, if the order service cares.
    pub fn from_event(event: &Event) -> Option<(&str, Self)> {
        let input = match event {
            Event::StockReservationFailed(e) => (
                e.order_id.as_str(),
                Self::StockReservationFailed { sku: e.sku.clone() },
            ),
            Event::StockCommitted(e) => (e.order_id.as_str(), Self::StockCommitted),
            Event::ReservationExpired(e) => (e.order_id.as_str(), Self::ReservationExpired),
            Event::PaymentSucceeded(e) => (e.order_id.as_str(), Self::PaymentSucceeded),
            Event::PaymentFailed(e) => (e.order_id.as_str(), Self::PaymentFailed),
            Event::PaymentRefunded(e) => (e.order_id.as_str(), Self::PaymentRefunded),
            Event::ShipmentScheduled(e) => (e.order_id.as_str(), Self::ShipmentScheduled),
            Event::ShipmentDispatched(e) => (e.order_id.as_str(), Self::ShipmentDispatched),
            Event::ShipmentDelivered(e) => (e.order_id.as_str(), Self::ShipmentDelivered),
            _ => return None,
        };
        Some(input)
    }
}

/// The order an event of the saga is about, for the events the order service handles (its
/// inputs, and the shipment events it shows on the order).
pub fn order_of(event: &Event) -> Option<&str> {
    OrderInput::from_event(event)
        .map(|(order_id, _)| order_id)
        .or_else(|| shipment_order(event))
}

/// The outcome of applying an input: the new state and the events to publish with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub state: OrderState,
    pub emit: Vec<Event>,
    /// Why nothing changed, for commands a caller must answer (e.g. cancel of a paid order).
    pub refused: Option<String>,
}

impl Decision {
    fn unchanged(state: &OrderState) -> Self {
        Self {
            state: state.clone(),
            emit: Vec::new(),
            refused: None,
        }
    }

    fn refused(state: &OrderState, why: String) -> Self {
        Self {
            refused: Some(why),
            ..Self::unchanged(state)
        }
    }
}

/// Applies one input to an order.
pub fn decide(order_id: &str, state: &OrderState, input: &OrderInput) -> Decision {
    let status = state.status();
    let mut next = state.clone();
    let cancel = |next: &mut OrderState, reason: &str| -> Vec<Event> {
        next.status = Some(OrderStatus::Cancelled);
        next.reason = Some(reason.to_owned());
        vec![
            OrderCancelled {
                order_id: order_id.to_owned(),
                reason: reason.to_owned(),
            }
            .into(),
        ]
    };
    let emit = match input {
        // A refund is a fact to record whatever the status: it is what compensation produced.
        OrderInput::PaymentRefunded => {
            next.refunded = true;
            Vec::new()
        }
        _ if status.is_final() => {
            return match input {
                OrderInput::CustomerCancelled => {
                    Decision::refused(state, format!("the order is already {status}"))
                }
                _ => Decision::unchanged(state),
            };
        }
        OrderInput::StockReservationFailed { sku } if status == OrderStatus::Pending => {
            next.status = Some(OrderStatus::Rejected);
            next.reason = Some(reasons::OUT_OF_STOCK.to_owned());
            next.rejected_sku = Some(sku.clone());
            vec![
                OrderRejected {
                    order_id: order_id.to_owned(),
                    reason: reasons::OUT_OF_STOCK.to_owned(),
                    sku: Some(sku.clone()),
                }
                .into(),
            ]
        }
        OrderInput::StockCommitted => {
            next.stock_committed = true;
            mark_paid_when_complete(order_id, &mut next)
        }
        OrderInput::PaymentSucceeded => {
            next.payment_captured = true;
            mark_paid_when_complete(order_id, &mut next)
        }
        OrderInput::PaymentFailed if status == OrderStatus::Pending => {
            cancel(&mut next, reasons::PAYMENT_DECLINED)
        }
        OrderInput::ReservationExpired | OrderInput::DeadlinePassed
            if status == OrderStatus::Pending =>
        {
            cancel(&mut next, reasons::TIMEOUT)
        }
        OrderInput::CustomerCancelled if status == OrderStatus::Pending => {
            cancel(&mut next, reasons::CUSTOMER_REQUEST)
        }
        OrderInput::CustomerCancelled => {
            return Decision::refused(
                state,
                format!("only a pending order can be cancelled; this one is {status}"),
            );
        }
        // The shipment moves a paid order on, each step only forward; a step whose
        // predecessor was never read (no such order of events on one key) still counts.
        OrderInput::ShipmentScheduled if status == OrderStatus::Paid => {
            next.status = Some(OrderStatus::ShippingScheduled);
            Vec::new()
        }
        OrderInput::ShipmentDispatched
            if matches!(status, OrderStatus::Paid | OrderStatus::ShippingScheduled) =>
        {
            next.status = Some(OrderStatus::Shipped);
            Vec::new()
        }
        OrderInput::ShipmentDelivered if status.is_paid() => {
            next.status = Some(OrderStatus::Delivered);
            Vec::new()
        }
        // Anything else arrives late or out of order for this status, and changes nothing.
        _ => return Decision::unchanged(state),
    };
    Decision {
        state: next,
        emit,
        refused: None,
    }
}

fn mark_paid_when_complete(order_id: &str, next: &mut OrderState) -> Vec<Event> {
    if next.status() == OrderStatus::Pending && next.stock_committed && next.payment_captured {
        next.status = Some(OrderStatus::Paid);
        vec![
            OrderPaid {
                order_id: order_id.to_owned(),
            }
            .into(),
        ]
    } else {
        Vec::new()
    }
}

/// What the order service knows of an order's shipment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    pub shipment_id: String,
    /// Known once ShipmentScheduled has been read (the other events carry no details).
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub pickup_date: Option<NaiveDate>,
    pub status: ShipmentStatus,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The order a shipment event is about.
pub fn shipment_order(event: &Event) -> Option<&str> {
    Some(match event {
        Event::ShipmentScheduled(e) => &e.order_id,
        Event::ShipmentDispatched(e) => &e.order_id,
        Event::ShipmentDelivered(e) => &e.order_id,
        _ => return None,
    })
}

/// Applies a shipment event that happened at `at` to what is known of the shipment; `None`
/// when it changes nothing (a duplicate, or news older than what is known).
pub fn track_shipment(
    current: Option<&Shipment>,
    event: &Event,
    at: DateTime<Utc>,
) -> Option<Shipment> {
    let (shipment_id, status) = match event {
        Event::ShipmentScheduled(e) => (&e.shipment_id, ShipmentStatus::Scheduled),
        Event::ShipmentDispatched(e) => (&e.shipment_id, ShipmentStatus::Dispatched),
        Event::ShipmentDelivered(e) => (&e.shipment_id, ShipmentStatus::Delivered),
        _ => return None,
    };
    let mut next = current.cloned().unwrap_or_else(|| Shipment {
        shipment_id: shipment_id.clone(),
        carrier: None,
        tracking_number: None,
        pickup_date: None,
        status,
        dispatched_at: None,
        delivered_at: None,
    });
    if let Event::ShipmentScheduled(scheduled) = event
        && next.carrier.is_none()
    {
        next.carrier = Some(scheduled.carrier.clone());
        next.tracking_number = Some(scheduled.tracking_number.clone());
        next.pickup_date = scheduled.pickup_date.parse().ok();
    }
    if status > next.status {
        next.status = status;
    }
    match status {
        ShipmentStatus::Dispatched => next.dispatched_at = next.dispatched_at.or(Some(at)),
        ShipmentStatus::Delivered => next.delivered_at = next.delivered_at.or(Some(at)),
        ShipmentStatus::Scheduled => {}
    }
    (current != Some(&next)).then_some(next)
}

/// A status an order moved to, for its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry<K> {
    pub order_id: K,
    pub status: OrderStatus,
    pub reason: Option<String>,
}

/// What a transaction's events changed, to be stored in one go; `K` is how the service names
/// an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderChanges<K> {
    /// The final state of every order that changed.
    pub states: Vec<(K, OrderState)>,
    /// Every status change, in the order they happened (two for one order are two entries).
    pub history: Vec<HistoryEntry<K>>,
    /// The final shipment of every order whose shipment changed.
    pub shipments: Vec<(K, Shipment)>,
}

impl<K> OrderChanges<K> {
    pub fn is_empty(&self) -> bool {
        self.states.is_empty() && self.history.is_empty() && self.shipments.is_empty()
    }
}

/// An event about an order the service does not have: events only follow an OrderCreated the
/// service committed first, so the event (or the data) is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown order {0}")]
pub struct UnknownOrder(pub String);

/// The orders (and their shipments) a transaction locked, and what the events it applies do to
/// them: [`decide`] and [`track_shipment`] folded over several events, so that a consumer's
/// batch is loaded once and saved once whatever its size. Each event sees what the ones
/// before it did. `K` is how the service names an order (its id, written as in the events).
#[derive(Debug, Clone)]
pub struct OrderBook<K> {
    states: HashMap<K, OrderState>,
    shipments: HashMap<K, Shipment>,
    changed: BTreeSet<K>,
    history: Vec<HistoryEntry<K>>,
    shipped: BTreeSet<K>,
}

impl<K> Default for OrderBook<K> {
    fn default() -> Self {
        Self {
            states: HashMap::new(),
            shipments: HashMap::new(),
            changed: BTreeSet::new(),
            history: Vec::new(),
            shipped: BTreeSet::new(),
        }
    }
}

impl<K: Clone + Ord + std::hash::Hash + fmt::Display> OrderBook<K> {
    /// `states`: the locked orders; `shipments`: what is known of their shipments.
    pub fn new(
        states: impl IntoIterator<Item = (K, OrderState)>,
        shipments: impl IntoIterator<Item = (K, Shipment)>,
    ) -> Self {
        Self {
            states: states.into_iter().collect(),
            shipments: shipments.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Applies `input` to the order `order`: what [`decide`] decides, kept for
    /// [`changes`](Self::changes).
    pub fn decide(&mut self, order: &K, input: &OrderInput) -> Result<Decision, UnknownOrder> {
        let state = self
            .states
            .get_mut(order)
            .ok_or_else(|| UnknownOrder(order.to_string()))?;
        let decision = decide(&order.to_string(), state, input);
        if decision.state != *state {
            if decision.state.status() != state.status() {
                self.history.push(HistoryEntry {
                    order_id: order.clone(),
                    status: decision.state.status(),
                    reason: decision.state.reason.clone(),
                });
            }
            *state = decision.state.clone();
            self.changed.insert(order.clone());
        }
        Ok(decision)
    }

    /// Applies an event about the order `order` (the one [`order_of`] names) that happened at
    /// `at`: the shipment it reports, then the input it stands for. Returns the events to
    /// publish.
    pub fn apply(
        &mut self,
        order: &K,
        event: &Event,
        at: DateTime<Utc>,
    ) -> Result<Vec<Event>, UnknownOrder> {
        if !self.states.contains_key(order) {
            return Err(UnknownOrder(order.to_string()));
        }
        if shipment_order(event).is_some()
            && let Some(next) = track_shipment(self.shipments.get(order), event, at)
        {
            self.shipments.insert(order.clone(), next);
            self.shipped.insert(order.clone());
        }
        let Some((_, input)) = OrderInput::from_event(event) else {
            return Ok(Vec::new());
        };
        Ok(self.decide(order, &input)?.emit)
    }

    /// Everything the applied events changed.
    pub fn changes(&self) -> OrderChanges<K> {
        fn pick<K: Clone + Ord + std::hash::Hash, T: Clone>(
            ids: &BTreeSet<K>,
            from: &HashMap<K, T>,
        ) -> Vec<(K, T)> {
            ids.iter()
                .filter_map(|id| Some((id.clone(), from.get(id)?.clone())))
                .collect()
        }
        OrderChanges {
            states: pick(&self.changed, &self.states),
            history: self.history.clone(),
            shipments: pick(&self.shipped, &self.shipments),
        }
    }
}

/// A line of a checkout, priced from the catalog replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckoutError {
    #[error("the order has no lines")]
    Empty,
    #[error("quantity of {sku} must be between 1 and {max}")]
    BadQuantity { sku: String, max: i32 },
    #[error("{sku} is listed twice")]
    DuplicateSku { sku: String },
    #[error("lines are priced in different currencies ({first} and {second})")]
    MixedCurrencies { first: String, second: String },
    #[error("the order total overflows")]
    TotalOverflow,
}

/// Where a checkout ships to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShippingAddress {
    /// A postal address checked by [`postal_address`].
    Postal(PostalAddress),
    /// Free text, as every address was before OrderCreated v3: still accepted for a
    /// deprecation period, and still what old events carry.
    FreeText(String),
}

impl ShippingAddress {
    /// The address on one line.
    pub fn one_line(&self) -> String {
        match self {
            Self::Postal(address) => address.one_line(),
            Self::FreeText(text) => text.clone(),
        }
    }

    pub fn postal(&self) -> Option<&PostalAddress> {
        match self {
            Self::Postal(address) => Some(address),
            Self::FreeText(_) => None,
        }
    }
}

/// Longest name, street line or city accepted, in characters.
pub const MAX_ADDRESS_LINE: usize = 200;
/// Longest postal code accepted, in characters.
pub const MAX_POSTAL_CODE: usize = 16;

/// A postal address as a customer sent it, checked field by field: each field trimmed, `name`,
/// `line1`, `city` and `postal_code` required, `line2` optional (blank is absent), no control
/// characters, a postal code of letters, digits, spaces and hyphens, and `country` an ISO 3166-1
/// alpha-2 code (any case; stored upper case). The errors name each field that is wrong.
pub fn postal_address(
    sent: &PostalAddress,
) -> Result<PostalAddress, std::collections::BTreeMap<&'static str, String>> {
    let mut errors = std::collections::BTreeMap::new();
    let mut text = |field: &'static str, value: &str, max: usize| -> String {
        let value = value.trim();
        if value.is_empty() {
            errors.insert(field, "is required".to_owned());
        } else if value.chars().count() > max || value.chars().any(char::is_control) {
            errors.insert(field, format!("must be at most {max} printable characters"));
        }
        value.to_owned()
    };
    let name = text("name", &sent.name, MAX_ADDRESS_LINE);
    let line1 = text("line1", &sent.line1, MAX_ADDRESS_LINE);
    let city = text("city", &sent.city, MAX_ADDRESS_LINE);
    let postal_code = text("postal_code", &sent.postal_code, MAX_POSTAL_CODE);
    let line2 = sent
        .line2
        .as_deref()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned);
    if line2.as_deref().is_some_and(|line| {
        line.chars().count() > MAX_ADDRESS_LINE || line.chars().any(char::is_control)
    }) {
        errors.insert(
            "line2",
            format!("must be at most {MAX_ADDRESS_LINE} printable characters"),
        );
    }
    if !errors.contains_key("postal_code")
        && !postal_code
            .chars()
            .all(|c| c.is_alphanumeric() || c == ' ' || c == '-')
    {
        errors.insert(
            "postal_code",
            "may hold only letters, digits, spaces and hyphens".to_owned(),
        );
    }
    let country = sent.country.trim().to_ascii_uppercase();
    if isocountry::CountryCode::for_alpha2(&country).is_err() {
        errors.insert(
            "country",
            "must be an ISO 3166-1 alpha-2 country code, e.g. DE, FR or US".to_owned(),
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(PostalAddress {
        name,
        line1,
        line2,
        city,
        postal_code,
        country,
    })
}

/// A checkout that passed [`price_order`]: what the customer agreed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub lines: Vec<PricedLine>,
    pub total_minor: i64,
    pub currency: String,
    pub payment_token: String,
    pub address: ShippingAddress,
}

impl Checkout {
    /// Prices `lines` ([`price_order`]) for a checkout paying with `payment_token`, shipped to
    /// `address`.
    pub fn new(
        lines: Vec<PricedLine>,
        payment_token: String,
        address: ShippingAddress,
    ) -> Result<Self, CheckoutError> {
        let (total_minor, currency) = price_order(&lines)?;
        Ok(Self {
            lines,
            total_minor,
            currency,
            payment_token,
            address,
        })
    }

    /// The order starts `pending` ([`OrderState::pending`]) and announces itself with this
    /// OrderCreated, which starts the saga.
    pub fn created(&self, order_id: &str, user_id: &str) -> Event {
        OrderCreated {
            order_id: order_id.to_owned(),
            user_id: user_id.to_owned(),
            lines: self
                .lines
                .iter()
                .map(|line| OrderLine {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                    unit_price_minor: line.unit_price_minor,
                })
                .collect(),
            total_minor: self.total_minor,
            currency: self.currency.clone(),
            payment_token: self.payment_token.clone(),
            shipping_address: self.address.one_line(),
            address: self.address.postal().cloned().map(Box::new),
        }
        .into()
    }
}

/// The most of one SKU a single order may ask for.
pub const MAX_QUANTITY_PER_LINE: i32 = 100;

/// Checks a checkout's lines and computes its total in minor units.
pub fn price_order(lines: &[PricedLine]) -> Result<(i64, String), CheckoutError> {
    let first = lines.first().ok_or(CheckoutError::Empty)?;
    let mut seen = std::collections::HashSet::new();
    let mut total: i64 = 0;
    for line in lines {
        if !(1..=MAX_QUANTITY_PER_LINE).contains(&line.quantity) {
            return Err(CheckoutError::BadQuantity {
                sku: line.sku.clone(),
                max: MAX_QUANTITY_PER_LINE,
            });
        }
        if !seen.insert(line.sku.as_str()) {
            return Err(CheckoutError::DuplicateSku {
                sku: line.sku.clone(),
            });
        }
        if line.currency != first.currency {
            return Err(CheckoutError::MixedCurrencies {
                first: first.currency.clone(),
                second: line.currency.clone(),
            });
        }
        let line_total = line
            .unit_price_minor
            .checked_mul(i64::from(line.quantity))
            .ok_or(CheckoutError::TotalOverflow)?;
        total = total
            .checked_add(line_total)
            .ok_or(CheckoutError::TotalOverflow)?;
    }
    Ok((total, first.currency.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = "order-1";

    /// given a state, when inputs happen in order, then the final state and every emitted event.
    fn given(state: OrderState) -> Scenario {
        Scenario {
            state,
            emitted: Vec::new(),
            refusals: Vec::new(),
        }
    }

    struct Scenario {
        state: OrderState,
        emitted: Vec<Event>,
        refusals: Vec<String>,
    }

    impl Scenario {
        fn when(mut self, input: OrderInput) -> Self {
            let decision = decide(ORDER, &self.state, &input);
            self.state = decision.state;
            self.emitted.extend(decision.emit);
            self.refusals.extend(decision.refused);
            self
        }

        fn then_status(self, status: OrderStatus, reason: Option<&str>) -> Self {
            assert_eq!(self.state.status(), status);
            assert_eq!(self.state.reason.as_deref(), reason);
            self
        }

        fn then_emitted(self, expected: &[Event]) -> Self {
            assert_eq!(self.emitted, expected);
            self
        }
    }

    fn cancelled(reason: &str) -> Event {
        OrderCancelled {
            order_id: ORDER.into(),
            reason: reason.into(),
        }
        .into()
    }

    fn paid() -> Event {
        OrderPaid {
            order_id: ORDER.into(),
        }
        .into()
    }

    #[test]
    fn payment_and_committed_stock_make_an_order_paid_in_either_order() {
        given(OrderState::pending())
            .when(OrderInput::PaymentSucceeded)
            .then_status(OrderStatus::Pending, None)
            .when(OrderInput::StockCommitted)
            .then_status(OrderStatus::Paid, None)
            .then_emitted(&[paid()]);
        given(OrderState::pending())
            .when(OrderInput::StockCommitted)
            .when(OrderInput::PaymentSucceeded)
            .then_status(OrderStatus::Paid, None)
            .then_emitted(&[paid()]);
    }

    #[test]
    fn duplicate_events_publish_nothing_twice() {
        given(OrderState::pending())
            .when(OrderInput::StockCommitted)
            .when(OrderInput::PaymentSucceeded)
            .when(OrderInput::PaymentSucceeded)
            .when(OrderInput::StockCommitted)
            .then_status(OrderStatus::Paid, None)
            .then_emitted(&[paid()]);
    }

    #[test]
    fn out_of_stock_rejects_naming_the_sku() {
        let scenario = given(OrderState::pending())
            .when(OrderInput::StockReservationFailed {
                sku: "TEE-M".into(),
            })
            .then_status(OrderStatus::Rejected, Some(reasons::OUT_OF_STOCK))
            .then_emitted(&[OrderRejected {
                order_id: ORDER.into(),
                reason: "out_of_stock".into(),
                sku: Some("TEE-M".into()),
            }
            .into()]);
        assert_eq!(scenario.state.rejected_sku.as_deref(), Some("TEE-M"));
    }

    #[test]
    fn a_declined_payment_cancels_and_asks_for_compensation() {
        given(OrderState::pending())
            .when(OrderInput::PaymentFailed)
            .then_status(OrderStatus::Cancelled, Some(reasons::PAYMENT_DECLINED))
            .then_emitted(&[cancelled("payment_declined")]);
    }

    #[test]
    fn an_expired_reservation_or_the_deadline_cancels_with_timeout() {
        given(OrderState::pending())
            .when(OrderInput::ReservationExpired)
            .then_status(OrderStatus::Cancelled, Some(reasons::TIMEOUT))
            .then_emitted(&[cancelled("timeout")]);
        given(OrderState::pending())
            .when(OrderInput::DeadlinePassed)
            .when(OrderInput::ReservationExpired)
            .then_status(OrderStatus::Cancelled, Some(reasons::TIMEOUT))
            .then_emitted(&[cancelled("timeout")]);
    }

    #[test]
    fn the_late_payment_race_ends_cancelled_and_records_the_refund() {
        given(OrderState::pending())
            .when(OrderInput::ReservationExpired)
            .when(OrderInput::PaymentSucceeded)
            .when(OrderInput::StockCommitted)
            .then_status(OrderStatus::Cancelled, Some(reasons::TIMEOUT))
            .when(OrderInput::PaymentRefunded)
            .then_emitted(&[cancelled("timeout")])
            .state
            .refunded
            .then_some(())
            .expect("refund recorded");
    }

    #[test]
    fn a_customer_may_cancel_only_a_pending_order() {
        given(OrderState::pending())
            .when(OrderInput::CustomerCancelled)
            .then_status(OrderStatus::Cancelled, Some(reasons::CUSTOMER_REQUEST))
            .then_emitted(&[cancelled("customer_request")]);
        let scenario = given(OrderState::pending())
            .when(OrderInput::PaymentSucceeded)
            .when(OrderInput::StockCommitted)
            .when(OrderInput::CustomerCancelled)
            .then_status(OrderStatus::Paid, None)
            .then_emitted(&[paid()]);
        assert_eq!(scenario.refusals.len(), 1);
    }

    #[test]
    fn statuses_never_move_backwards() {
        given(OrderState::pending())
            .when(OrderInput::StockReservationFailed { sku: "A".into() })
            .when(OrderInput::PaymentSucceeded)
            .when(OrderInput::StockCommitted)
            .when(OrderInput::PaymentFailed)
            .when(OrderInput::DeadlinePassed)
            .then_status(OrderStatus::Rejected, Some(reasons::OUT_OF_STOCK));
        given(OrderState::pending())
            .when(OrderInput::PaymentSucceeded)
            .when(OrderInput::StockCommitted)
            .when(OrderInput::ShipmentScheduled)
            .when(OrderInput::PaymentFailed)
            .when(OrderInput::ReservationExpired)
            .when(OrderInput::DeadlinePassed)
            .then_status(OrderStatus::ShippingScheduled, None)
            .then_emitted(&[paid()]);
    }

    #[test]
    fn a_shipment_for_an_unpaid_order_changes_nothing() {
        for input in [
            OrderInput::ShipmentScheduled,
            OrderInput::ShipmentDispatched,
            OrderInput::ShipmentDelivered,
        ] {
            given(OrderState::pending())
                .when(input.clone())
                .then_status(OrderStatus::Pending, None)
                .then_emitted(&[]);
        }
        given(OrderState::pending())
            .when(OrderInput::PaymentFailed)
            .when(OrderInput::ShipmentDispatched)
            .when(OrderInput::ShipmentDelivered)
            .then_status(OrderStatus::Cancelled, Some(reasons::PAYMENT_DECLINED));
    }

    #[test]
    fn a_paid_order_is_shipped_then_delivered_as_its_shipment_moves() {
        let paid_order = || {
            given(OrderState::pending())
                .when(OrderInput::PaymentSucceeded)
                .when(OrderInput::StockCommitted)
        };
        paid_order()
            .when(OrderInput::ShipmentScheduled)
            .then_status(OrderStatus::ShippingScheduled, None)
            .when(OrderInput::ShipmentDispatched)
            .then_status(OrderStatus::Shipped, None)
            .when(OrderInput::ShipmentDelivered)
            .then_status(OrderStatus::Delivered, None)
            .then_emitted(&[paid()]);
        // Late and repeated shipment news never moves it back.
        paid_order()
            .when(OrderInput::ShipmentScheduled)
            .when(OrderInput::ShipmentDispatched)
            .when(OrderInput::ShipmentDelivered)
            .when(OrderInput::ShipmentDispatched)
            .when(OrderInput::ShipmentScheduled)
            .when(OrderInput::ShipmentDelivered)
            .then_status(OrderStatus::Delivered, None);
        // A step whose predecessor was never read still counts.
        paid_order()
            .when(OrderInput::ShipmentDelivered)
            .then_status(OrderStatus::Delivered, None);
        let refused = paid_order()
            .when(OrderInput::ShipmentScheduled)
            .when(OrderInput::ShipmentDispatched)
            .when(OrderInput::CustomerCancelled)
            .then_status(OrderStatus::Shipped, None);
        assert_eq!(
            refused.refusals,
            ["only a pending order can be cancelled; this one is shipped"]
        );
    }

    #[test]
    fn shipped_and_scheduled_orders_are_settled_but_not_final() {
        use OrderStatus::*;
        let settled: Vec<_> = OrderStatus::ALL
            .into_iter()
            .filter(|status| status.is_settled())
            .collect();
        assert_eq!(
            settled,
            [ShippingScheduled, Shipped, Delivered, Rejected, Cancelled]
        );
        let finals: Vec<_> = OrderStatus::ALL
            .into_iter()
            .filter(|status| status.is_final())
            .collect();
        assert_eq!(finals, [Delivered, Rejected, Cancelled]);
    }

    fn scheduled() -> Event {
        events::ShipmentScheduled {
            order_id: ORDER.into(),
            shipment_id: "s-1".into(),
            carrier: "Bazaar Post".into(),
            tracking_number: "BP123456789012".into(),
            pickup_date: "2026-03-09".into(),
        }
        .into()
    }

    fn dispatched() -> Event {
        events::ShipmentDispatched {
            order_id: ORDER.into(),
            shipment_id: "s-1".into(),
        }
        .into()
    }

    fn delivered() -> Event {
        events::ShipmentDelivered {
            order_id: ORDER.into(),
            shipment_id: "s-1".into(),
        }
        .into()
    }

    /// given what is known of a shipment, when shipment events arrive, then what the order shows.
    fn given_shipment(current: Option<Shipment>) -> Tracking {
        Tracking { current }
    }

    struct Tracking {
        current: Option<Shipment>,
    }

    impl Tracking {
        fn when(mut self, event: Event, minute: u32) -> Self {
            let at = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, 9, 10, minute, 0)
                .single()
                .expect("a time");
            if let Some(next) = track_shipment(self.current.as_ref(), &event, at) {
                self.current = Some(next);
            }
            self
        }

        fn then(self, check: impl FnOnce(&Shipment)) -> Self {
            check(self.current.as_ref().expect("a shipment"));
            self
        }
    }

    #[test]
    fn a_scheduled_shipment_shows_carrier_tracking_and_pickup() {
        given_shipment(None).when(scheduled(), 0).then(|shipment| {
            assert_eq!(shipment.status, ShipmentStatus::Scheduled);
            assert_eq!(shipment.carrier.as_deref(), Some("Bazaar Post"));
            assert_eq!(shipment.tracking_number.as_deref(), Some("BP123456789012"));
            assert_eq!(shipment.pickup_date, "2026-03-09".parse().ok());
            assert_eq!(shipment.dispatched_at, None);
        });
    }

    #[test]
    fn a_shipment_moves_to_dispatched_then_delivered_keeping_the_first_times() {
        given_shipment(None)
            .when(scheduled(), 0)
            .when(dispatched(), 5)
            .then(|shipment| assert_eq!(shipment.status, ShipmentStatus::Dispatched))
            .when(delivered(), 9)
            .when(dispatched(), 12)
            .when(delivered(), 15)
            .then(|shipment| {
                assert_eq!(shipment.status, ShipmentStatus::Delivered);
                assert_eq!(
                    shipment.dispatched_at.map(|t| t.format("%M").to_string()),
                    Some("05".into())
                );
                assert_eq!(
                    shipment.delivered_at.map(|t| t.format("%M").to_string()),
                    Some("09".into())
                );
            });
    }

    #[test]
    fn a_late_schedule_fills_in_details_without_moving_the_status_back() {
        given_shipment(None)
            .when(dispatched(), 5)
            .then(|shipment| {
                assert_eq!(shipment.status, ShipmentStatus::Dispatched);
                assert_eq!(shipment.carrier, None);
            })
            .when(scheduled(), 6)
            .then(|shipment| {
                assert_eq!(shipment.status, ShipmentStatus::Dispatched);
                assert_eq!(shipment.carrier.as_deref(), Some("Bazaar Post"));
            });
    }

    #[test]
    fn a_repeated_shipment_event_changes_nothing() {
        let at = Utc::now();
        let first = track_shipment(None, &scheduled(), at).expect("new");
        assert_eq!(track_shipment(Some(&first), &scheduled(), at), None);
        assert_eq!(track_shipment(Some(&first), &paid(), at), None);
        assert_eq!(shipment_order(&paid()), None);
        assert_eq!(shipment_order(&delivered()), Some(ORDER));
    }

    fn line(sku: &str, quantity: i32, price: i64, currency: &str) -> PricedLine {
        PricedLine {
            sku: sku.into(),
            name: sku.into(),
            quantity,
            unit_price_minor: price,
            currency: currency.into(),
        }
    }

    #[test]
    fn statuses_read_back_and_say_what_is_final_and_paid() {
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
            assert!(!(status.is_paid() && status.is_unpaid_final()), "{status}");
        }
        assert!("lost".parse::<OrderStatus>().is_err());
        // What the saga still moves on by itself.
        let open: Vec<OrderStatus> = OrderStatus::ALL
            .into_iter()
            .filter(|s| !s.is_settled())
            .collect();
        assert_eq!(open, [OrderStatus::Pending, OrderStatus::Paid]);
    }

    #[test]
    fn a_checkout_announces_its_lines_and_total() {
        let checkout = Checkout::new(
            vec![line("A", 2, 1999, "EUR")],
            "tok_visa".into(),
            ShippingAddress::Postal(address()),
        )
        .expect("valid");
        let Event::OrderCreated(created) = checkout.created(ORDER, "u-1") else {
            panic!("not OrderCreated")
        };
        assert_eq!(
            (created.total_minor, created.currency.as_str()),
            (3998, "EUR")
        );
        assert_eq!(created.lines.len(), 1);
        assert_eq!(created.lines[0].quantity, 2);
        // Readers of v1 and v2 still find the address, on one line.
        assert_eq!(created.address.as_deref(), Some(&address()));
        assert_eq!(
            created.shipping_address,
            "Ada Lovelace, 1 Main St, Flat 2, 10115 Berlin, DE"
        );
        assert_eq!(order_of(&paid()), None);
        assert_eq!(order_of(&delivered()), Some(ORDER));
        assert_eq!(
            Checkout::new(vec![], "t".into(), ShippingAddress::FreeText("a".into())),
            Err(CheckoutError::Empty)
        );
    }

    fn address() -> PostalAddress {
        PostalAddress {
            name: "Ada Lovelace".into(),
            line1: "1 Main St".into(),
            line2: Some("Flat 2".into()),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        }
    }

    #[test]
    fn a_postal_address_is_trimmed_and_its_country_upper_cased() {
        let sent = PostalAddress {
            name: "  Ada Lovelace ".into(),
            line2: Some("   ".into()),
            country: "fr".into(),
            ..address()
        };
        let checked = postal_address(&sent).expect("valid");
        assert_eq!(checked.name, "Ada Lovelace");
        assert_eq!(checked.line2, None, "a blank second line is no line");
        assert_eq!(checked.country, "FR");
        assert_eq!(postal_address(&address()), Ok(address()));
    }

    #[test]
    fn a_postal_address_names_every_field_that_is_wrong() {
        let sent = PostalAddress {
            name: " ".into(),
            line1: "x".repeat(MAX_ADDRESS_LINE + 1),
            line2: Some("a\u{0}b".into()),
            city: String::new(),
            postal_code: "10115; DROP".into(),
            country: "XX".into(),
        };
        let errors = postal_address(&sent).expect_err("invalid");
        assert_eq!(
            errors.keys().copied().collect::<Vec<_>>(),
            ["city", "country", "line1", "line2", "name", "postal_code"]
        );
        assert!(
            errors["country"].contains("ISO 3166-1 alpha-2"),
            "{errors:?}"
        );
        for country in ["D", "DEU", "", "12", "UK"] {
            let sent = PostalAddress {
                country: country.into(),
                ..address()
            };
            assert!(
                postal_address(&sent).is_err_and(|errors| errors.contains_key("country")),
                "{country:?} is no alpha-2 code"
            );
        }
    }

    #[test]
    fn an_order_total_is_the_sum_of_its_lines_in_minor_units() {
        assert_eq!(
            price_order(&[line("A", 2, 1999, "EUR"), line("B", 1, 890, "EUR")]),
            Ok((4888, "EUR".into()))
        );
    }

    #[test]
    fn bad_checkouts_are_refused_with_the_reason() {
        assert_eq!(price_order(&[]), Err(CheckoutError::Empty));
        assert!(matches!(
            price_order(&[line("A", 0, 1, "EUR")]),
            Err(CheckoutError::BadQuantity { .. })
        ));
        assert!(matches!(
            price_order(&[line("A", 101, 1, "EUR")]),
            Err(CheckoutError::BadQuantity { .. })
        ));
        assert!(matches!(
            price_order(&[line("A", 1, 1, "EUR"), line("A", 1, 1, "EUR")]),
            Err(CheckoutError::DuplicateSku { .. })
        ));
        assert!(matches!(
            price_order(&[line("A", 1, 1, "EUR"), line("B", 1, 1, "USD")]),
            Err(CheckoutError::MixedCurrencies { .. })
        ));
        assert_eq!(
            price_order(&[line("A", 100, i64::MAX / 10, "EUR")]),
            Err(CheckoutError::TotalOverflow)
        );
    }

    fn committed() -> Event {
        events::StockCommitted {
            order_id: ORDER.into(),
        }
        .into()
    }

    fn payment_succeeded() -> Event {
        events::PaymentSucceeded {
            order_id: ORDER.into(),
            payment_id: "p-1".into(),
            amount_minor: 100,
            currency: "EUR".into(),
        }
        .into()
    }

    #[test]
    fn a_batch_that_pays_and_schedules_an_order_stores_it_once_with_each_status_in_its_history() {
        // Given a pending order
        let mut book = OrderBook::new([(ORDER.to_owned(), OrderState::pending())], []);
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let order = ORDER.to_owned();
        // When its stock, payment and shipment events come in one batch
        let mut emitted = Vec::new();
        for event in [committed(), payment_succeeded(), scheduled()] {
            emitted.extend(book.apply(&order, &event, at).expect("a known order"));
        }
        // Then it is paid once, and stored once at its last state with both moves in its history
        assert_eq!(emitted, vec![paid()]);
        let changes = book.changes();
        assert_eq!(changes.states.len(), 1);
        assert_eq!(changes.states[0].1.status(), OrderStatus::ShippingScheduled);
        assert_eq!(
            changes
                .history
                .iter()
                .map(|change| change.status)
                .collect::<Vec<_>>(),
            vec![OrderStatus::Paid, OrderStatus::ShippingScheduled]
        );
        assert_eq!(changes.shipments.len(), 1);
        assert_eq!(
            changes.shipments[0].1.carrier.as_deref(),
            Some("Bazaar Post")
        );
    }

    #[test]
    fn events_that_change_nothing_leave_nothing_to_store() {
        let order = ORDER.to_owned();
        let mut book = OrderBook::new([(order.clone(), OrderState::pending())], []);
        let at = DateTime::<Utc>::UNIX_EPOCH;
        book.apply(&order, &committed(), at).expect("committed");
        let first = book.changes();
        book.apply(&order, &committed(), at).expect("again");
        assert_eq!(book.changes(), first, "a duplicate adds nothing");
        assert!(first.history.is_empty(), "still pending");
        assert!(OrderBook::<String>::default().changes().is_empty());
    }

    #[test]
    fn an_event_about_an_order_the_book_does_not_hold_is_refused() {
        let mut book = OrderBook::default();
        assert_eq!(
            book.apply(&ORDER.to_owned(), &committed(), DateTime::<Utc>::UNIX_EPOCH),
            Err(UnknownOrder(ORDER.to_owned()))
        );
    }
}
