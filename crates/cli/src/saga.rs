//! Reading one order's saga from its events: causal order, and where it is waiting.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What the ordering needs of an event.
#[derive(Debug, Clone)]
pub struct Node {
    pub event_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    /// Breaks ties between events of the same microsecond: (topic, partition, offset).
    pub position: (String, i32, i64),
}

/// Indices of `nodes` in causal order: an event comes after the event that caused it, and
/// otherwise the earliest comes first (a topological sort that prefers time).
pub fn causal_order(nodes: &[Node]) -> Vec<usize> {
    let index: HashMap<Uuid, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| (node.event_id, i))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut ready = BinaryHeap::new();
    let key = |i: usize| Reverse((nodes[i].occurred_at, nodes[i].position.clone(), i));
    for (i, node) in nodes.iter().enumerate() {
        match node.causation_id.and_then(|cause| index.get(&cause)) {
            // An event naming itself as cause would never become ready.
            Some(&parent) if parent != i => children.entry(parent).or_default().push(i),
            _ => ready.push(key(i)),
        }
    }
    let mut order = Vec::with_capacity(nodes.len());
    let mut emitted = HashSet::new();
    while let Some(Reverse((_, _, i))) = ready.pop() {
        if !emitted.insert(i) {
            continue;
        }
        order.push(i);
        for &child in children.get(&i).into_iter().flatten() {
            ready.push(key(child));
        }
    }
    // A causation cycle (corrupt headers) would leave events out: append them by time.
    if order.len() < nodes.len() {
        let mut rest: Vec<usize> = (0..nodes.len()).filter(|i| !emitted.contains(i)).collect();
        rest.sort_by_key(|&i| (nodes[i].occurred_at, nodes[i].position.clone()));
        order.extend(rest);
    }
    order
}

/// Where an order's saga stands, judged from the event types seen for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Nothing more is expected.
    Complete(String),
    /// The next step belongs to `service`; the last step it follows is an `after` event.
    Waiting {
        service: &'static str,
        after: &'static str,
        message: String,
    },
}

impl Progress {
    pub fn describe(&self) -> String {
        match self {
            Self::Complete(message) => message.clone(),
            Self::Waiting {
                service, message, ..
            } => format!("waiting for {service}: {message}"),
        }
    }
}

fn waiting(service: &'static str, after: &'static str, message: &str) -> Progress {
    Progress::Waiting {
        service,
        after,
        message: message.to_owned(),
    }
}

/// The choreography of `README.md` ("Checkout saga"), as the next step expected after what
/// was seen.
pub fn progress(seen: &HashSet<&str>) -> Progress {
    let has = |name: &str| seen.contains(name);
    if !has("OrderCreated") {
        return waiting(
            "order",
            "",
            "no OrderCreated for this order in the scanned topics (wrong id, or beyond retention?)",
        );
    }
    let charged = has("PaymentSucceeded");
    let refund_due = charged && !has("PaymentRefunded");
    if has("OrderRejected") {
        if refund_due {
            return waiting(
                "payment",
                "OrderRejected",
                "OrderRejected and PaymentSucceeded seen, no PaymentRefunded yet",
            );
        }
        return Progress::Complete("rejected; nothing reserved or charged remains".into());
    }
    if has("OrderCancelled") {
        let released = has("StockReleased") || has("ReservationExpired");
        if has("StockReserved") && !released {
            return waiting(
                "inventory",
                "OrderCancelled",
                "OrderCancelled seen, no StockReleased yet",
            );
        }
        if refund_due {
            return waiting(
                "payment",
                "OrderCancelled",
                "OrderCancelled and PaymentSucceeded seen, no PaymentRefunded yet",
            );
        }
        return Progress::Complete(if charged {
            "cancelled; stock released and payment refunded".into()
        } else if has("StockReserved") && !has("PaymentFailed") {
            // A charge may still be in flight; payment refunds it if it lands.
            "cancelled; stock released; no payment outcome seen (nothing charged, or a charge \
             in flight that payment will refund)"
                .into()
        } else {
            "cancelled; stock released, nothing charged".into()
        });
    }
    if has("StockReservationFailed") {
        return waiting(
            "order",
            "StockReservationFailed",
            "StockReservationFailed seen, no OrderRejected yet",
        );
    }
    if !has("StockReserved") {
        return waiting(
            "inventory",
            "OrderCreated",
            "OrderCreated seen, no StockReserved yet",
        );
    }
    if has("PaymentFailed") {
        return waiting(
            "order",
            "PaymentFailed",
            "PaymentFailed seen, no OrderCancelled yet",
        );
    }
    if !charged {
        return waiting(
            "payment",
            "StockReserved",
            "StockReserved seen, no PaymentSucceeded or PaymentFailed yet",
        );
    }
    if !has("StockCommitted") {
        return waiting(
            "inventory",
            "PaymentSucceeded",
            "PaymentSucceeded seen, no StockCommitted yet",
        );
    }
    if !has("OrderPaid") {
        return waiting(
            "order",
            "StockCommitted",
            "PaymentSucceeded and StockCommitted seen, no OrderPaid yet",
        );
    }
    if !has("ShipmentScheduled") {
        return waiting(
            "shipping",
            "OrderPaid",
            "OrderPaid seen, no ShipmentScheduled yet",
        );
    }
    if !has("ShipmentDispatched") {
        return waiting(
            "shipping",
            "ShipmentScheduled",
            "ShipmentScheduled seen, no ShipmentDispatched yet",
        );
    }
    if !has("ShipmentDelivered") {
        return waiting(
            "shipping",
            "ShipmentDispatched",
            "ShipmentDispatched seen, no ShipmentDelivered yet",
        );
    }
    Progress::Complete("delivered".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen<'a>(types: &[&'a str]) -> HashSet<&'a str> {
        types.iter().copied().collect()
    }

    #[test]
    fn each_step_names_who_is_expected_next() {
        let cases: [(&[&str], &str); 7] = [
            (&["OrderCreated"], "inventory"),
            (&["OrderCreated", "StockReserved"], "payment"),
            (
                &["OrderCreated", "StockReserved", "PaymentSucceeded"],
                "inventory",
            ),
            (
                &[
                    "OrderCreated",
                    "StockReserved",
                    "PaymentSucceeded",
                    "StockCommitted",
                ],
                "order",
            ),
            (&["OrderCreated", "StockReserved", "PaymentFailed"], "order"),
            (
                &["OrderCreated", "StockReserved", "OrderCancelled"],
                "inventory",
            ),
            (
                &[
                    "OrderCreated",
                    "StockReserved",
                    "PaymentSucceeded",
                    "OrderCancelled",
                    "StockReleased",
                ],
                "payment",
            ),
        ];
        for (types, expected) in cases {
            match progress(&seen(types)) {
                Progress::Waiting { service, .. } => assert_eq!(service, expected, "{types:?}"),
                other => panic!("{types:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn compensated_and_rejected_orders_are_complete() {
        let refunded = seen(&[
            "OrderCreated",
            "StockReserved",
            "PaymentSucceeded",
            "OrderCancelled",
            "StockReleased",
            "PaymentRefunded",
        ]);
        assert!(matches!(progress(&refunded), Progress::Complete(_)));
        let rejected = seen(&["OrderCreated", "StockReservationFailed", "OrderRejected"]);
        assert!(matches!(progress(&rejected), Progress::Complete(_)));
    }

    fn node(id: u128, cause: Option<u128>, millis: i64) -> Node {
        Node {
            event_id: Uuid::from_u128(id),
            causation_id: cause.map(Uuid::from_u128),
            occurred_at: DateTime::from_timestamp_millis(millis).expect("time"),
            position: ("t".into(), 0, i64::try_from(id).unwrap_or(0)),
        }
    }

    #[test]
    fn causes_come_first_even_when_clocks_disagree() {
        // 2 was caused by 1 but stamped earlier (another host's clock); 3 is unrelated.
        let nodes = [node(1, None, 100), node(2, Some(1), 90), node(3, None, 95)];
        assert_eq!(causal_order(&nodes), vec![2, 0, 1]);
        let nodes = [
            node(1, None, 100),
            node(2, Some(1), 110),
            node(3, None, 105),
        ];
        assert_eq!(causal_order(&nodes), vec![0, 2, 1]);
    }

    #[test]
    fn a_cycle_does_not_lose_events() {
        let nodes = [node(1, Some(2), 100), node(2, Some(1), 110)];
        let mut order = causal_order(&nodes);
        order.sort_unstable();
        assert_eq!(order, vec![0, 1]);
    }
}
