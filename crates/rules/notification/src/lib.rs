//! The notification service's rules: which order events a customer hears about, and how.
//!
//! Plain functions, no Kafka, database or mail server (Cargo keeps this crate free of them), so
//! the rules can be tested as the business rules they are, and the service, the invariant
//! checker and the saga simulator share them:
//! - Each lifecycle event of an order (paid, rejected, cancelled, refunded, shipment scheduled,
//!   dispatched, delivered) becomes one notice: one feed entry and one e-mail. A second event of
//!   the same kind for the same order (a replay under a new event id) adds nothing.
//! - A notice belongs to the order's customer, learnt from OrderCreated, and is mailed to the
//!   address learnt from UserRegistered. Whichever arrives late, the notice waits for it.
//! - Each e-mail's Message-ID is derived from the event id, so the rare second copy (a crash
//!   after the mail server took a message but before that was recorded) is recognisably the
//!   same message to any receiver.
//! - A refused attempt is retried after a delay that doubles up to a ceiling, for as long as it
//!   takes: a mail server being down never loses a notice. Only an e-mail that can never be
//!   sent as it is (a malformed address) gives up.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use events::{Event, EventType};
use order_rules::{OrderStatus, ShipmentStatus, reasons};
use uuid::Uuid;

/// The service these rules belong to (its consumer group, database and CLI name).
pub const SERVICE: &str = "notification";

/// The event types the notification service does something with ([`input_of`]); its consumer
/// passes over the rest of what its topics carry.
pub const HANDLES: &[EventType] = &[
    EventType::UserRegistered,
    EventType::OrderCreated,
    EventType::OrderPaid,
    EventType::OrderRejected,
    EventType::OrderCancelled,
    EventType::PaymentRefunded,
    EventType::ShipmentScheduled,
    EventType::ShipmentDispatched,
    EventType::ShipmentDelivered,
];

/// The topics the notification service consumes: every event [`input_of`] reacts to is on one.
pub const SUBSCRIPTIONS: &[&str] = &[
    "user-events",
    "order-events",
    "payment-events",
    "shipment-events",
];

/// What the notification service does with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationInput<'a> {
    /// Learn a customer's address and name (UserRegistered).
    Customer {
        user_id: &'a str,
        email: &'a str,
        display_name: &'a str,
    },
    /// Learn whose an order is and what it costs (OrderCreated).
    Order {
        order_id: &'a str,
        user_id: &'a str,
        facts: OrderFacts,
    },
    /// A lifecycle event of an order, which may become a notice ([`notice_for`]).
    Lifecycle { order_id: &'a str },
}

/// What the notification service does with an event, if anything.
pub fn input_of(event: &Event) -> Option<NotificationInput<'_>> {
    Some(match event {
        Event::UserRegistered(user) => NotificationInput::Customer {
            user_id: &user.user_id,
            email: &user.email,
            display_name: &user.display_name,
        },
        Event::OrderCreated(order) => NotificationInput::Order {
            order_id: &order.order_id,
            user_id: &order.user_id,
            facts: OrderFacts {
                total_minor: order.total_minor,
                currency: order.currency.clone(),
            },
        },
        event => NotificationInput::Lifecycle {
            order_id: order_of(event)?,
        },
    })
}

/// What a notice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    OrderPaid,
    OrderRejected,
    OrderCancelled,
    PaymentRefunded,
    ShipmentScheduled,
    ShipmentDispatched,
    ShipmentDelivered,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Self::OrderPaid,
        Self::OrderRejected,
        Self::OrderCancelled,
        Self::PaymentRefunded,
        Self::ShipmentScheduled,
        Self::ShipmentDispatched,
        Self::ShipmentDelivered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderPaid => "order_paid",
            Self::OrderRejected => "order_rejected",
            Self::OrderCancelled => "order_cancelled",
            Self::PaymentRefunded => "payment_refunded",
            Self::ShipmentScheduled => "shipment_scheduled",
            Self::ShipmentDispatched => "shipment_dispatched",
            Self::ShipmentDelivered => "shipment_delivered",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| format!("unknown notification kind {text:?}"))
    }
}

/// What the service learnt about an order from its OrderCreated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFacts {
    pub total_minor: i64,
    pub currency: String,
}

/// One thing a customer is told about one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub order_id: String,
    pub kind: Kind,
    pub subject: String,
    pub body: String,
}

/// The order a lifecycle event is about, for the events that become notices.
pub fn order_of(event: &Event) -> Option<&str> {
    Some(match event {
        Event::OrderPaid(e) => &e.order_id,
        Event::OrderRejected(e) => &e.order_id,
        Event::OrderCancelled(e) => &e.order_id,
        Event::PaymentRefunded(e) => &e.order_id,
        Event::ShipmentScheduled(e) => &e.order_id,
        Event::ShipmentDispatched(e) => &e.order_id,
        Event::ShipmentDelivered(e) => &e.order_id,
        _ => return None,
    })
}

/// The notice an event becomes, if the customer hears about it. `order` is what OrderCreated
/// said, when it has arrived.
pub fn notice_for(event: &Event, order: Option<&OrderFacts>) -> Option<Notice> {
    let order_id = order_of(event)?.to_owned();
    let reference = order_ref(&order_id);
    let (kind, subject, body) = match event {
        Event::OrderPaid(_) => {
            let payment = order.map_or_else(
                || "your payment".to_owned(),
                |facts| {
                    format!(
                        "your payment of {}",
                        format_amount(facts.total_minor, &facts.currency)
                    )
                },
            );
            (
                Kind::OrderPaid,
                format!("Order {reference} is confirmed"),
                format!(
                    "Thank you! We received {payment} for order {order_id}. \
                     We will let you know when it ships."
                ),
            )
        }
        Event::OrderRejected(rejected) => {
            let why = match (rejected.reason.as_str(), &rejected.sku) {
                (reasons::OUT_OF_STOCK, Some(sku)) => format!("{sku} is out of stock"),
                (reasons::OUT_OF_STOCK, None) => "an item is out of stock".to_owned(),
                (other, _) => other.replace('_', " "),
            };
            (
                Kind::OrderRejected,
                format!("Order {reference} could not be placed"),
                format!(
                    "Sorry, we could not accept order {order_id}: {why}. You have not been charged."
                ),
            )
        }
        Event::OrderCancelled(cancelled) => {
            let why = match cancelled.reason.as_str() {
                reasons::PAYMENT_DECLINED => {
                    "your payment was declined, so nothing was charged".to_owned()
                }
                reasons::TIMEOUT => "the payment did not complete in time; \
                     anything that was charged will be refunded"
                    .to_owned(),
                reasons::CUSTOMER_REQUEST => {
                    "you asked us to; anything that was charged will be refunded".to_owned()
                }
                other => other.replace('_', " "),
            };
            (
                Kind::OrderCancelled,
                format!("Order {reference} was cancelled"),
                format!("Order {order_id} was cancelled: {why}."),
            )
        }
        Event::PaymentRefunded(refund) => (
            Kind::PaymentRefunded,
            format!("Refund for order {reference}"),
            format!(
                "We refunded {} for order {order_id}. It can take a few days to show on your \
                 statement.",
                format_amount(refund.amount_minor, &refund.currency)
            ),
        ),
        Event::ShipmentScheduled(shipment) => (
            Kind::ShipmentScheduled,
            format!("Order {reference} ships on {}", shipment.pickup_date),
            format!(
                "Order {order_id} will be picked up by {} on {}. Tracking number: {}.",
                shipment.carrier, shipment.pickup_date, shipment.tracking_number
            ),
        ),
        Event::ShipmentDispatched(_) => (
            Kind::ShipmentDispatched,
            format!("Order {reference} is on its way"),
            format!("Order {order_id} has left our warehouse and is on its way to you."),
        ),
        Event::ShipmentDelivered(_) => (
            Kind::ShipmentDelivered,
            format!("Order {reference} was delivered"),
            format!("Order {order_id} was delivered. Enjoy, and thank you for shopping with us!"),
        ),
        _ => return None,
    };
    Some(Notice {
        order_id,
        kind,
        subject,
        body,
    })
}

/// The notice an event of an order becomes, unless the order has a notice of that kind already
/// (`noticed`): a second event of a kind for an order (a replay under a new event id) adds
/// nothing.
pub fn new_notice(event: &Event, order: Option<&OrderFacts>, noticed: &[Kind]) -> Option<Notice> {
    notice_for(event, order).filter(|notice| !noticed.contains(&notice.kind))
}

/// The notices an order's outcome calls for (`expected`), and those it rules out for good
/// (`forbidden`), given its status, whether a refund was made, and its shipment's status. An
/// order that is not final yet may still get any.
pub fn notices_for(
    status: OrderStatus,
    refunded: bool,
    shipment: Option<ShipmentStatus>,
) -> (BTreeSet<Kind>, BTreeSet<Kind>) {
    let mut expected = BTreeSet::new();
    let allowed: BTreeSet<Kind> = match status {
        OrderStatus::Paid
        | OrderStatus::ShippingScheduled
        | OrderStatus::Shipped
        | OrderStatus::Delivered => {
            expected.insert(Kind::OrderPaid);
            // What the order's status says of its shipment, whatever the shipment shows.
            use OrderStatus::{Delivered, Shipped, ShippingScheduled};
            for (reached, kind) in [
                (
                    matches!(status, ShippingScheduled | Shipped | Delivered),
                    Kind::ShipmentScheduled,
                ),
                (
                    matches!(status, Shipped | Delivered),
                    Kind::ShipmentDispatched,
                ),
                (status == Delivered, Kind::ShipmentDelivered),
            ] {
                if reached {
                    expected.insert(kind);
                }
            }
            // Each step the shipment took, and those before it.
            for (step, kind) in [
                (ShipmentStatus::Scheduled, Kind::ShipmentScheduled),
                (ShipmentStatus::Dispatched, Kind::ShipmentDispatched),
                (ShipmentStatus::Delivered, Kind::ShipmentDelivered),
            ] {
                if shipment.is_some_and(|reached| reached >= step) {
                    expected.insert(kind);
                }
            }
            [
                Kind::OrderPaid,
                Kind::ShipmentScheduled,
                Kind::ShipmentDispatched,
                Kind::ShipmentDelivered,
            ]
            .into()
        }
        OrderStatus::Rejected => {
            expected.insert(Kind::OrderRejected);
            [Kind::OrderRejected].into()
        }
        OrderStatus::Cancelled => {
            expected.insert(Kind::OrderCancelled);
            if refunded {
                expected.insert(Kind::PaymentRefunded);
            }
            [Kind::OrderCancelled, Kind::PaymentRefunded].into()
        }
        OrderStatus::Pending => Kind::ALL.into(),
    };
    let forbidden = Kind::ALL
        .into_iter()
        .filter(|kind| !allowed.contains(kind))
        .collect();
    (expected, forbidden)
}

/// A short reference to an order for subjects: the last eight characters of its id (the random
/// part of a UUID v7; its first characters are a timestamp, the same for orders a minute apart).
pub fn order_ref(order_id: &str) -> String {
    let compact: String = order_id.chars().filter(|c| *c != '-').collect();
    let start = compact.len().saturating_sub(8);
    format!("#{}", compact[start..].to_uppercase())
}

/// Minor units as an amount with the currency's number of decimals, e.g. `39.98 EUR`.
pub fn format_amount(minor: i64, currency: &str) -> String {
    let currency = currency.trim().to_uppercase();
    let decimals: u32 = match currency.as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    };
    let sign = if minor < 0 { "-" } else { "" };
    let magnitude = minor.unsigned_abs();
    if decimals == 0 {
        return format!("{sign}{magnitude} {currency}");
    }
    let unit = 10u64.pow(decimals);
    format!(
        "{sign}{}.{:0width$} {currency}",
        magnitude / unit,
        magnitude % unit,
        width = decimals as usize
    )
}

/// The Message-ID of the e-mail for the event `event_id`: the same for every attempt.
pub fn message_id(event_id: Uuid, domain: &str) -> String {
    format!("<{event_id}@{domain}>")
}

/// The text of an e-mail: the notice, addressed to the customer by name.
pub fn email_text(display_name: &str, notice_body: &str) -> String {
    let name = display_name.trim();
    let greeting = if name.is_empty() {
        "Hello,".to_owned()
    } else {
        format!("Hello {name},")
    };
    format!(
        "{greeting}\n\n{notice_body}\n\n-- \nBazaar\nYou receive this e-mail because you placed an \
         order at Bazaar. Your notifications are also in your account.\n"
    )
}

/// Where an outgoing e-mail stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailStatus {
    /// Waiting for its customer's address, its next attempt, or a worker.
    Pending,
    /// The mail server (or the mail folder) took it.
    Sent,
    /// It can never be sent as it is; kept for an operator.
    Failed,
}

impl EmailStatus {
    pub const ALL: [EmailStatus; 3] = [Self::Pending, Self::Sent, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for EmailStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EmailStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| format!("unknown e-mail status {text:?}"))
    }
}

/// How one attempt to send an e-mail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Accepted,
    /// The server was unreachable, timed out or refused: worth trying again.
    Refused,
    /// The message cannot be built (e.g. a malformed address): no retry can help.
    Unsendable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The wait after the `failures`-th refusal in a row (1 for the first).
    pub fn delay_after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// An outgoing e-mail as the sender worker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmailState {
    pub status: EmailStatus,
    /// Attempts made so far.
    pub attempts: u32,
}

impl EmailState {
    pub fn pending() -> Self {
        Self {
            status: EmailStatus::Pending,
            attempts: 0,
        }
    }
}

/// What follows an attempt: the new state, and when to try again if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterAttempt {
    pub state: EmailState,
    pub retry_in: Option<Duration>,
}

/// Applies an attempt's outcome. A sent or failed e-mail stays as it is, whatever a late
/// outcome says: nothing is ever sent twice on purpose.
pub fn after_attempt(state: EmailState, attempt: Attempt, policy: &RetryPolicy) -> AfterAttempt {
    if state.status != EmailStatus::Pending {
        return AfterAttempt {
            state,
            retry_in: None,
        };
    }
    let attempts = state.attempts.saturating_add(1);
    let (status, retry_in) = match attempt {
        Attempt::Accepted => (EmailStatus::Sent, None),
        Attempt::Unsendable => (EmailStatus::Failed, None),
        Attempt::Refused => (EmailStatus::Pending, Some(policy.delay_after(attempts))),
    };
    AfterAttempt {
        state: EmailState { status, attempts },
        retry_in,
    }
}

/// What a transaction knows of some orders: whose each is and what it costs (once its
/// OrderCreated was read) and the kinds of notice it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownOrder<K> {
    pub customer: Option<(K, OrderFacts)>,
    pub noticed: Vec<Kind>,
}

impl<K> Default for KnownOrder<K> {
    fn default() -> Self {
        Self {
            customer: None,
            noticed: Vec::new(),
        }
    }
}

/// What the events of a transaction learn and notice about orders: [`new_notice`] folded over
/// several events, so that a consumer's batch is loaded once and saved once whatever its size.
/// Each event sees what the ones before it did (an OrderCreated, then the order's OrderPaid:
/// the notice is addressed to its customer). `K` is how the service names orders and users.
#[derive(Debug, Clone)]
pub struct NoticeBook<K> {
    orders: std::collections::HashMap<K, KnownOrder<K>>,
    /// Orders learnt here: order, customer, facts.
    remembered: Vec<(K, K, OrderFacts)>,
}

impl<K: Clone + Eq + std::hash::Hash> NoticeBook<K> {
    /// `orders`: what the transaction read, under the orders' locks.
    pub fn new(orders: impl IntoIterator<Item = (K, KnownOrder<K>)>) -> Self {
        Self {
            orders: orders.into_iter().collect(),
            remembered: Vec::new(),
        }
    }

    /// Learns whose `order` is (OrderCreated). The first OrderCreated read stays: a replay
    /// changes nothing.
    pub fn remember(&mut self, order: &K, customer: &K, facts: &OrderFacts) {
        let known = self.orders.entry(order.clone()).or_default();
        if known.customer.is_none() {
            known.customer = Some((customer.clone(), facts.clone()));
            self.remembered
                .push((order.clone(), customer.clone(), facts.clone()));
        }
    }

    /// The notice a lifecycle event of `order` becomes, with its customer when known; `None`
    /// when the order has a notice of that kind already.
    pub fn notice(&mut self, order: &K, event: &Event) -> Option<(Option<K>, Notice)> {
        let known = self.orders.entry(order.clone()).or_default();
        let facts = known.customer.as_ref().map(|(_, facts)| facts);
        let notice = new_notice(event, facts, &known.noticed)?;
        known.noticed.push(notice.kind);
        let customer = known
            .customer
            .as_ref()
            .map(|(customer, _)| customer.clone());
        Some((customer, notice))
    }

    /// The orders learnt by [`remember`](Self::remember), in order: order, customer, facts.
    pub fn remembered(&self) -> &[(K, K, OrderFacts)] {
        &self.remembered
    }
}

#[cfg(test)]
mod tests {
    use events::{
        OrderCancelled, OrderCreated, OrderPaid, OrderRejected, PaymentRefunded, ShipmentDelivered,
        ShipmentDispatched, ShipmentScheduled, UserRegistered,
    };

    use super::*;

    const ORDER: &str = "0190f0c2-7d3e-7a11-9c41-5be2a3f4d9e8";

    fn paid() -> Event {
        OrderPaid {
            order_id: ORDER.into(),
        }
        .into()
    }

    fn facts() -> OrderFacts {
        OrderFacts {
            total_minor: 3998,
            currency: "EUR".into(),
        }
    }

    #[test]
    fn every_lifecycle_event_becomes_a_notice_of_its_own_kind() {
        let events: Vec<(Event, Kind)> = vec![
            (paid(), Kind::OrderPaid),
            (
                OrderRejected {
                    order_id: ORDER.into(),
                    reason: "out_of_stock".into(),
                    sku: Some("PRINT-A3-001".into()),
                }
                .into(),
                Kind::OrderRejected,
            ),
            (
                OrderCancelled {
                    order_id: ORDER.into(),
                    reason: "payment_declined".into(),
                }
                .into(),
                Kind::OrderCancelled,
            ),
            (
                PaymentRefunded {
                    order_id: ORDER.into(),
                    payment_id: "pi_1".into(),
                    amount_minor: 1250,
                    currency: "EUR".into(),
                }
                .into(),
                Kind::PaymentRefunded,
            ),
            (
                ShipmentScheduled {
                    order_id: ORDER.into(),
                    shipment_id: "s-1".into(),
                    carrier: "Bazaar Post".into(),
                    tracking_number: "BP1234567890".into(),
                    pickup_date: "2026-03-02".into(),
                }
                .into(),
                Kind::ShipmentScheduled,
            ),
            (
                ShipmentDispatched {
                    order_id: ORDER.into(),
                    shipment_id: "s-1".into(),
                }
                .into(),
                Kind::ShipmentDispatched,
            ),
            (
                ShipmentDelivered {
                    order_id: ORDER.into(),
                    shipment_id: "s-1".into(),
                }
                .into(),
                Kind::ShipmentDelivered,
            ),
        ];
        for (event, kind) in events {
            let notice = notice_for(&event, Some(&facts())).expect("a notice");
            assert_eq!(notice.kind, kind);
            assert_eq!(notice.order_id, ORDER);
            assert!(notice.subject.contains("#A3F4D9E8"), "{notice:?}");
            assert!(notice.body.contains(ORDER), "{notice:?}");
            assert_eq!(kind.as_str().parse::<Kind>(), Ok(kind));
        }
    }

    #[test]
    fn events_that_are_not_about_the_customer_make_no_notice() {
        let created: Event = OrderCreated {
            order_id: ORDER.into(),
            user_id: "u".into(),
            lines: Vec::new(),
            total_minor: 1,
            currency: "EUR".into(),
            payment_token: "tok_visa".into(),
            shipping_address: "x".into(),
            address: None,
        }
        .into();
        let registered: Event = UserRegistered {
            user_id: "u".into(),
            email: "a@example.com".into(),
            display_name: "A".into(),
            registered_at: 0,
        }
        .into();
        assert_eq!(notice_for(&created, None), None);
        assert_eq!(notice_for(&registered, None), None);
        assert_eq!(order_of(&created), None);
    }

    #[test]
    fn a_second_event_of_a_kind_adds_no_notice() {
        assert!(new_notice(&paid(), None, &[]).is_some());
        assert_eq!(new_notice(&paid(), None, &[Kind::OrderPaid]), None);
        assert!(new_notice(&paid(), None, &[Kind::OrderCancelled]).is_some());
    }

    #[test]
    fn each_outcome_calls_for_its_notices() {
        let kinds = |list: &[Kind]| list.iter().copied().collect::<BTreeSet<Kind>>();
        let (expected, forbidden) =
            notices_for(OrderStatus::Paid, false, Some(ShipmentStatus::Dispatched));
        assert_eq!(
            expected,
            kinds(&[
                Kind::OrderPaid,
                Kind::ShipmentScheduled,
                Kind::ShipmentDispatched
            ])
        );
        assert!(forbidden.contains(&Kind::OrderCancelled));
        let (expected, forbidden) = notices_for(OrderStatus::Cancelled, true, None);
        assert_eq!(
            expected,
            kinds(&[Kind::OrderCancelled, Kind::PaymentRefunded])
        );
        assert!(forbidden.contains(&Kind::OrderPaid));
        let (expected, forbidden) = notices_for(OrderStatus::Pending, false, None);
        assert!(expected.is_empty() && forbidden.is_empty());
        assert_eq!(
            notices_for(OrderStatus::ShippingScheduled, false, None).0,
            kinds(&[Kind::OrderPaid, Kind::ShipmentScheduled])
        );
        // A shipped or delivered order owes the customer every step up to its own.
        assert_eq!(
            notices_for(OrderStatus::Shipped, false, None).0,
            kinds(&[
                Kind::OrderPaid,
                Kind::ShipmentScheduled,
                Kind::ShipmentDispatched
            ])
        );
        assert_eq!(
            notices_for(OrderStatus::Delivered, false, None).0,
            kinds(&[
                Kind::OrderPaid,
                Kind::ShipmentScheduled,
                Kind::ShipmentDispatched,
                Kind::ShipmentDelivered
            ])
        );
    }

    #[test]
    fn a_paid_notice_names_the_amount_once_the_order_is_known() {
        let known = notice_for(&paid(), Some(&facts())).expect("notice");
        assert!(
            known.body.contains("your payment of 39.98 EUR"),
            "{known:?}"
        );
        let unknown = notice_for(&paid(), None).expect("notice");
        assert!(
            unknown.body.contains("We received your payment for"),
            "{unknown:?}"
        );
    }

    #[test]
    fn rejections_and_cancellations_say_why_in_words() {
        let rejected = notice_for(
            &OrderRejected {
                order_id: ORDER.into(),
                reason: "out_of_stock".into(),
                sku: Some("PRINT-A3-001".into()),
            }
            .into(),
            None,
        )
        .expect("notice");
        assert!(rejected.body.contains("PRINT-A3-001 is out of stock"));
        assert!(rejected.body.contains("not been charged"));
        for (reason, words) in [
            ("payment_declined", "declined"),
            ("timeout", "did not complete in time"),
            ("customer_request", "you asked us to"),
            ("fraud_suspected", "fraud suspected"),
        ] {
            let notice = notice_for(
                &OrderCancelled {
                    order_id: ORDER.into(),
                    reason: reason.into(),
                }
                .into(),
                None,
            )
            .expect("notice");
            assert!(notice.body.contains(words), "{reason}: {}", notice.body);
        }
    }

    #[test]
    fn amounts_use_the_currency_decimals() {
        assert_eq!(format_amount(3998, "EUR"), "39.98 EUR");
        assert_eq!(format_amount(5, "usd"), "0.05 USD");
        assert_eq!(format_amount(1500, "JPY"), "1500 JPY");
        assert_eq!(format_amount(1234, "KWD"), "1.234 KWD");
        assert_eq!(format_amount(-250, "EUR"), "-2.50 EUR");
    }

    #[test]
    fn the_order_reference_is_the_random_tail_of_its_id() {
        assert_eq!(order_ref(ORDER), "#A3F4D9E8");
        assert_eq!(order_ref("abc"), "#ABC");
    }

    #[test]
    fn a_message_id_depends_only_on_the_event() {
        let event = Uuid::now_v7();
        assert_eq!(
            message_id(event, "bazaar.localhost"),
            format!("<{event}@bazaar.localhost>")
        );
        assert_eq!(
            message_id(event, "bazaar.localhost"),
            message_id(event, "bazaar.localhost")
        );
    }

    #[test]
    fn an_email_greets_the_customer_by_name() {
        let text = email_text("Ada Lovelace", "Order 1 was delivered.");
        assert!(text.starts_with("Hello Ada Lovelace,\n\nOrder 1 was delivered."));
        assert!(email_text("  ", "x").starts_with("Hello,\n"));
    }

    const POLICY: RetryPolicy = RetryPolicy {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(5),
    };

    /// given an e-mail, when attempts end in order, then its state and every retry delay.
    struct Scenario {
        state: EmailState,
        delays: Vec<Duration>,
    }

    fn given(state: EmailState) -> Scenario {
        Scenario {
            state,
            delays: Vec::new(),
        }
    }

    impl Scenario {
        fn when(mut self, attempt: Attempt) -> Self {
            let next = after_attempt(self.state, attempt, &POLICY);
            self.state = next.state;
            self.delays.extend(next.retry_in);
            self
        }

        fn then(self, status: EmailStatus, attempts: u32, delays: &[u64]) -> Self {
            assert_eq!(self.state.status, status);
            assert_eq!(self.state.attempts, attempts);
            let expected: Vec<Duration> = delays.iter().map(|s| Duration::from_secs(*s)).collect();
            assert_eq!(self.delays, expected);
            self
        }
    }

    #[test]
    fn an_accepted_email_is_sent_after_one_attempt() {
        given(EmailState::pending())
            .when(Attempt::Accepted)
            .then(EmailStatus::Sent, 1, &[]);
    }

    #[test]
    fn a_refusing_server_is_retried_with_doubling_delays_up_to_the_ceiling_until_it_accepts() {
        given(EmailState::pending())
            .when(Attempt::Refused)
            .when(Attempt::Refused)
            .when(Attempt::Refused)
            .when(Attempt::Refused)
            .when(Attempt::Refused)
            .then(EmailStatus::Pending, 5, &[1, 2, 4, 5, 5])
            .when(Attempt::Accepted)
            .then(EmailStatus::Sent, 6, &[1, 2, 4, 5, 5]);
    }

    #[test]
    fn a_sent_email_is_never_sent_again_whatever_a_late_outcome_says() {
        given(EmailState::pending())
            .when(Attempt::Accepted)
            .when(Attempt::Refused)
            .when(Attempt::Unsendable)
            .then(EmailStatus::Sent, 1, &[]);
    }

    #[test]
    fn only_an_unsendable_email_gives_up() {
        given(EmailState::pending())
            .when(Attempt::Refused)
            .when(Attempt::Unsendable)
            .then(EmailStatus::Failed, 2, &[1])
            .when(Attempt::Accepted)
            .then(EmailStatus::Failed, 2, &[1]);
    }

    #[test]
    fn the_delay_never_overflows_however_long_the_outage() {
        assert_eq!(POLICY.delay_after(1_000_000), Duration::from_secs(5));
        assert_eq!(POLICY.delay_after(0), Duration::from_secs(1));
    }

    #[test]
    fn an_order_learnt_and_paid_in_one_batch_gets_one_addressed_notice() {
        // Given nothing known of the order
        let mut book: NoticeBook<&str> = NoticeBook::new([]);
        // When its OrderCreated and then its OrderPaid (twice) come in one batch
        book.remember(&ORDER, &"user-1", &facts());
        let first = book.notice(&ORDER, &paid());
        let again = book.notice(&ORDER, &paid());
        // Then one notice, addressed to the customer, and the order learnt once
        let (customer, notice) = first.expect("a notice");
        assert_eq!(customer, Some("user-1"));
        assert_eq!(notice.kind, Kind::OrderPaid);
        assert_eq!(again, None);
        book.remember(&ORDER, &"user-2", &facts());
        assert_eq!(book.remembered(), &[(ORDER, "user-1", facts())]);
    }

    #[test]
    fn a_notice_before_its_order_is_known_waits_unaddressed() {
        let mut book: NoticeBook<&str> = NoticeBook::new([(
            ORDER,
            KnownOrder {
                customer: None,
                noticed: vec![Kind::OrderPaid],
            },
        )]);
        assert_eq!(book.notice(&ORDER, &paid()), None, "noticed before");
        let cancelled: Event = OrderCancelled {
            order_id: ORDER.into(),
            reason: "timeout".into(),
        }
        .into();
        let (customer, notice) = book.notice(&ORDER, &cancelled).expect("a notice");
        assert_eq!((customer, notice.kind), (None, Kind::OrderCancelled));
    }
}
