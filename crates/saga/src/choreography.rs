//! Who publishes and who consumes what, and where one order's saga stands.

use std::collections::BTreeSet;

use events::EventType;

/// The service that publishes events without a rules crate of its own.
pub const AUTH: &str = "auth";

/// A service that consumes events: its name, the topics its rules crate subscribes to and the
/// event types on them that it does something with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumer {
    pub name: &'static str,
    /// Logical topics (the deployment prefix is added).
    pub consumes: &'static [&'static str],
    /// The rest of what those topics carry is passed over (not even kept in its inbox).
    pub handles: &'static [EventType],
}

/// Every consuming service, each as its rules crate declares it.
pub const CONSUMERS: [Consumer; 6] = [
    Consumer {
        name: order_rules::SERVICE,
        consumes: order_rules::SUBSCRIPTIONS,
        handles: order_rules::HANDLES,
    },
    Consumer {
        name: inventory_rules::SERVICE,
        consumes: inventory_rules::SUBSCRIPTIONS,
        handles: inventory_rules::HANDLES,
    },
    Consumer {
        name: payment_rules::SERVICE,
        consumes: payment_rules::SUBSCRIPTIONS,
        handles: payment_rules::HANDLES,
    },
    Consumer {
        name: notification_rules::SERVICE,
        consumes: notification_rules::SUBSCRIPTIONS,
        handles: notification_rules::HANDLES,
    },
    Consumer {
        name: shipping_rules::SERVICE,
        consumes: shipping_rules::SUBSCRIPTIONS,
        handles: shipping_rules::HANDLES,
    },
    // Not part of the saga: the catalog's replica of the stock levels.
    Consumer {
        name: product_rules::SERVICE,
        consumes: product_rules::SUBSCRIPTIONS,
        handles: product_rules::HANDLES,
    },
];

/// Whether the consuming service `service` does anything with events of type `event`.
pub fn handles(service: &str, event: EventType) -> bool {
    CONSUMERS
        .iter()
        .any(|consumer| consumer.name == service && consumer.handles.contains(&event))
}

/// The service that publishes each event type. The simulator checks that every event a
/// service's rules emit is one this names that service for.
pub fn publisher(event: EventType) -> &'static str {
    use EventType as E;
    match event {
        E::UserRegistered => AUTH,
        E::ProductSnapshot => product_rules::SERVICE,
        E::OrderCreated | E::OrderPaid | E::OrderRejected | E::OrderCancelled => {
            order_rules::SERVICE
        }
        E::StockReserved
        | E::StockReservationFailed
        | E::StockCommitted
        | E::StockReleased
        | E::ReservationExpired
        | E::StockLevelChanged => inventory_rules::SERVICE,
        E::PaymentSucceeded | E::PaymentFailed | E::PaymentRefunded => payment_rules::SERVICE,
        E::ShipmentScheduled | E::ShipmentDispatched | E::ShipmentDelivered => {
            shipping_rules::SERVICE
        }
    }
}

/// The service that publishes to a logical topic.
pub fn producer_of(topic: &str) -> Option<&'static str> {
    EventType::ALL
        .iter()
        .find(|event| event.topic() == topic)
        .map(|event| publisher(*event))
}

/// The topics keyed by order id, in the catalog's order: one order's saga lives in these.
pub fn order_topics() -> Vec<&'static str> {
    let mut topics: Vec<&'static str> = Vec::new();
    for event in EventType::ALL {
        let keyed_by_order = EventType::ALL
            .iter()
            .filter(|other| other.topic() == event.topic())
            .all(|other| other.key_field() == "order_id");
        if keyed_by_order && !topics.contains(&event.topic()) {
            topics.push(event.topic());
        }
    }
    topics
}

/// Where an order's saga stands, judged from the event types seen for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Nothing more is expected, unless `unless` acts: the events cannot tell whether that
    /// service still has something to do (a charge in flight when the order was cancelled).
    Complete {
        message: String,
        unless: Option<&'static str>,
    },
    /// The next step belongs to `service`; the last step it follows is an `after` event.
    Waiting {
        service: &'static str,
        after: Option<EventType>,
        message: String,
    },
}

impl Progress {
    pub fn describe(&self) -> String {
        match self {
            Self::Complete { message, .. } => message.clone(),
            Self::Waiting {
                service, message, ..
            } => format!("waiting for {service}: {message}"),
        }
    }

    /// The service expected to act next, if any.
    pub fn waiting_for(&self) -> Option<&'static str> {
        match self {
            Self::Waiting { service, .. } => Some(service),
            Self::Complete { .. } => None,
        }
    }
}

fn waiting(service: &'static str, after: EventType, message: &str) -> Progress {
    Progress::Waiting {
        service,
        after: Some(after),
        message: message.to_owned(),
    }
}

fn complete(message: &str) -> Progress {
    Progress::Complete {
        message: message.to_owned(),
        unless: None,
    }
}

/// The choreography, as the next step expected after the event types seen for one order. The
/// saga simulator checks it against the services' rules at every step of every scenario: the
/// service it waits for does publish again, and nothing new follows a complete saga.
pub fn progress(seen: &BTreeSet<EventType>) -> Progress {
    use EventType as E;
    let has = |event: EventType| seen.contains(&event);
    let (order, inventory, payment, shipping) = (
        order_rules::SERVICE,
        inventory_rules::SERVICE,
        payment_rules::SERVICE,
        shipping_rules::SERVICE,
    );
    if !has(E::OrderCreated) {
        return Progress::Waiting {
            service: order,
            after: None,
            message: "no OrderCreated for this order in the scanned topics (wrong id, or beyond \
                      retention?)"
                .into(),
        };
    }
    let charged = has(E::PaymentSucceeded);
    let refund_due = charged && !has(E::PaymentRefunded);
    if has(E::OrderRejected) {
        if refund_due {
            return waiting(
                payment,
                E::OrderRejected,
                "OrderRejected and PaymentSucceeded seen, no PaymentRefunded yet",
            );
        }
        return complete("rejected; nothing reserved or charged remains");
    }
    if has(E::OrderCancelled) {
        if !has(E::StockReserved) && !has(E::StockReservationFailed) {
            return waiting(
                inventory,
                E::OrderCancelled,
                "OrderCancelled seen before inventory answered OrderCreated (a reservation it \
                 makes now is released at once)",
            );
        }
        let released = has(E::StockReleased) || has(E::ReservationExpired);
        if has(E::StockReserved) && !released {
            return waiting(
                inventory,
                E::OrderCancelled,
                "OrderCancelled seen, no StockReleased yet",
            );
        }
        if refund_due {
            return waiting(
                payment,
                E::OrderCancelled,
                "OrderCancelled and PaymentSucceeded seen, no PaymentRefunded yet",
            );
        }
        if charged {
            return complete("cancelled; stock released and payment refunded");
        }
        if has(E::StockReserved) && !has(E::PaymentFailed) {
            // A charge may still be in flight; payment refunds it if it lands.
            return Progress::Complete {
                message: "cancelled; stock released; no payment outcome seen (nothing charged, \
                          or a charge in flight that payment will refund)"
                    .into(),
                unless: Some(payment),
            };
        }
        return complete("cancelled; stock released, nothing charged");
    }
    if has(E::StockReservationFailed) {
        return waiting(
            order,
            E::StockReservationFailed,
            "StockReservationFailed seen, no OrderRejected yet",
        );
    }
    if !has(E::StockReserved) {
        return waiting(
            inventory,
            E::OrderCreated,
            "OrderCreated seen, no StockReserved yet",
        );
    }
    if has(E::ReservationExpired) {
        return waiting(
            order,
            E::ReservationExpired,
            "ReservationExpired seen, no OrderCancelled yet",
        );
    }
    if has(E::PaymentFailed) {
        return waiting(
            order,
            E::PaymentFailed,
            "PaymentFailed seen, no OrderCancelled yet",
        );
    }
    if !charged {
        return waiting(
            payment,
            E::StockReserved,
            "StockReserved seen, no PaymentSucceeded or PaymentFailed yet",
        );
    }
    if !has(E::StockCommitted) {
        return waiting(
            inventory,
            E::PaymentSucceeded,
            "PaymentSucceeded seen, no StockCommitted yet",
        );
    }
    if !has(E::OrderPaid) {
        return waiting(
            order,
            E::StockCommitted,
            "PaymentSucceeded and StockCommitted seen, no OrderPaid yet",
        );
    }
    if !has(E::ShipmentScheduled) {
        return waiting(
            shipping,
            E::OrderPaid,
            "OrderPaid seen, no ShipmentScheduled yet",
        );
    }
    if !has(E::ShipmentDispatched) {
        return waiting(
            shipping,
            E::ShipmentScheduled,
            "ShipmentScheduled seen, no ShipmentDispatched yet",
        );
    }
    if !has(E::ShipmentDelivered) {
        return waiting(
            shipping,
            E::ShipmentDispatched,
            "ShipmentDispatched seen, no ShipmentDelivered yet",
        );
    }
    complete("delivered")
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventType as E;

    fn seen(types: &[EventType]) -> BTreeSet<EventType> {
        types.iter().copied().collect()
    }

    #[test]
    fn each_step_names_who_is_expected_next() {
        let cases: [(&[EventType], &str); 7] = [
            (&[E::OrderCreated], "inventory"),
            (&[E::OrderCreated, E::StockReserved], "payment"),
            (
                &[E::OrderCreated, E::StockReserved, E::PaymentSucceeded],
                "inventory",
            ),
            (
                &[
                    E::OrderCreated,
                    E::StockReserved,
                    E::PaymentSucceeded,
                    E::StockCommitted,
                ],
                "order",
            ),
            (
                &[E::OrderCreated, E::StockReserved, E::PaymentFailed],
                "order",
            ),
            (
                &[E::OrderCreated, E::StockReserved, E::OrderCancelled],
                "inventory",
            ),
            (
                &[
                    E::OrderCreated,
                    E::StockReserved,
                    E::PaymentSucceeded,
                    E::OrderCancelled,
                    E::StockReleased,
                ],
                "payment",
            ),
        ];
        for (types, expected) in cases {
            assert_eq!(
                progress(&seen(types)).waiting_for(),
                Some(expected),
                "{types:?}"
            );
        }
    }

    #[test]
    fn compensated_and_rejected_orders_are_complete() {
        let refunded = seen(&[
            E::OrderCreated,
            E::StockReserved,
            E::PaymentSucceeded,
            E::OrderCancelled,
            E::StockReleased,
            E::PaymentRefunded,
        ]);
        assert!(matches!(
            progress(&refunded),
            Progress::Complete { unless: None, .. }
        ));
        let rejected = seen(&[E::OrderCreated, E::StockReservationFailed, E::OrderRejected]);
        assert!(matches!(progress(&rejected), Progress::Complete { .. }));
    }

    #[test]
    fn every_topic_has_a_producer_and_every_consumed_topic_carries_events() {
        for topic in events::codec::event_topics() {
            assert!(producer_of(topic).is_some(), "{topic}");
        }
        for consumer in CONSUMERS {
            for topic in consumer.consumes {
                assert!(producer_of(topic).is_some(), "{}: {topic}", consumer.name);
            }
            // A service subscribes to exactly the topics of the event types it handles.
            let mut topics: Vec<&str> = consumer.handles.iter().map(|e| e.topic()).collect();
            topics.sort_unstable();
            topics.dedup();
            let mut consumes = consumer.consumes.to_vec();
            consumes.sort_unstable();
            assert_eq!(topics, consumes, "{}", consumer.name);
        }
        assert_eq!(
            order_topics(),
            [
                "order-events",
                "inventory-events",
                "payment-events",
                "shipment-events"
            ]
        );
    }
}
