//! The payment service's rules: when an order is charged, when it is refunded, and that it is
//! charged at most once. Plain functions, no Kafka, database or card processor (Cargo keeps this
//! crate free of them); the service, the invariant checker and the saga simulator share them.
//!
//! The payment service's part of the checkout saga:
//! - An order is charged once both its terms (OrderCreated) and its stock (StockReserved) are
//!   known, in whichever order those events arrive.
//! - The charge uses the order id as idempotency key, so a retry after a timeout can never
//!   charge twice.
//! - An order cancelled, rejected or whose reservation expired before it was charged is never
//!   charged. One cancelled after a successful charge (the late-payment race) is refunded.
//!   One whose charge outcome is unknown is resolved first (the idempotent retry returns the
//!   original outcome), then refunded if it was charged.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use events::{Event, EventType, PaymentFailed, PaymentRefunded, PaymentSucceeded};
use serde::{Deserialize, Serialize};

/// The service these rules belong to (its consumer group, database and CLI name).
pub const SERVICE: &str = "payment";

/// The event types the payment service does something with ([`input_of`]); its consumer passes
/// over the rest of what its topics carry.
pub const HANDLES: &[EventType] = &[
    EventType::OrderCreated,
    EventType::OrderRejected,
    EventType::OrderCancelled,
    EventType::StockReserved,
    EventType::StockReservationFailed,
    EventType::ReservationExpired,
];

/// The topics the payment service consumes: every event [`input_of`] reacts to is on one.
pub const SUBSCRIPTIONS: &[&str] = &["order-events", "inventory-events"];

/// The order an event is about and the payment input it is, if the payment service cares.
pub fn input_of(event: &Event) -> Option<(&str, PaymentInput)> {
    Some(match event {
        Event::OrderCreated(order) => (
            &order.order_id,
            PaymentInput::OrderCreated(Terms {
                amount_minor: order.total_minor,
                currency: order.currency.clone(),
                payment_token: order.payment_token.clone(),
            }),
        ),
        Event::StockReserved(reserved) => (&reserved.order_id, PaymentInput::StockReserved),
        Event::StockReservationFailed(failed) => (&failed.order_id, PaymentInput::OrderAbandoned),
        Event::OrderRejected(rejected) => (&rejected.order_id, PaymentInput::OrderAbandoned),
        Event::OrderCancelled(cancelled) => (&cancelled.order_id, PaymentInput::OrderCancelled),
        Event::ReservationExpired(expired) => (&expired.order_id, PaymentInput::OrderCancelled),
        _ => return None,
    })
}

/// Spells statuses as they are stored, and reads them back.
macro_rules! spelled {
    ($type:ident, $what:literal, { $( $variant:ident => $text:literal, )+ }) => {
        impl $type {
            pub const ALL: &[$type] = &[$( $type::$variant, )+];

            pub fn as_str(self) -> &'static str {
                match self { $( $type::$variant => $text, )+ }
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $type {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|status| status.as_str() == text)
                    .ok_or_else(|| format!(concat!("unknown ", $what, " {:?}"), text))
            }
        }
    };
}

/// What the customer agreed to pay, from OrderCreated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    pub amount_minor: i64,
    pub currency: String,
    pub payment_token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    /// Waiting for the order's terms or its stock.
    Waiting,
    /// Due: the charge worker will (re)try it.
    Due,
    Succeeded,
    Declined,
    /// Cancelled before any attempt; never charged.
    Abandoned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    None,
    Due,
    Refunded,
}

spelled!(ChargeStatus, "charge status", {
    Waiting => "waiting",
    Due => "due",
    Succeeded => "succeeded",
    Declined => "declined",
    Abandoned => "abandoned",
});

spelled!(RefundStatus, "refund status", {
    None => "none",
    Due => "due",
    Refunded => "refunded",
});

/// What a settled call to the processor is recorded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionKind {
    Charge,
    Refund,
}

spelled!(TransactionKind, "transaction kind", {
    Charge => "charge",
    Refund => "refund",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionStatus {
    Succeeded,
    Declined,
}

spelled!(TransactionStatus, "transaction status", {
    Succeeded => "succeeded",
    Declined => "declined",
});

/// One settled call to the processor, to keep in the payment's books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionRecord {
    pub kind: TransactionKind,
    pub status: TransactionStatus,
    pub amount_minor: i64,
    pub currency: String,
    /// The processor's payment id of a charge, or the decline's reason.
    pub provider_reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentState {
    pub terms: Option<Terms>,
    pub stock_reserved: bool,
    pub cancelled: bool,
    /// A charge was sent and its outcome is unknown (timeout, 5xx).
    pub attempted: bool,
    pub charge: ChargeStatus,
    pub payment_id: Option<String>,
    pub refund: RefundStatus,
}

impl Default for PaymentState {
    fn default() -> Self {
        Self {
            terms: None,
            stock_reserved: false,
            cancelled: false,
            attempted: false,
            charge: ChargeStatus::Waiting,
            payment_id: None,
            refund: RefundStatus::None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentInput {
    OrderCreated(Terms),
    StockReserved,
    /// Out of stock, or the order was rejected: nothing will be charged.
    OrderAbandoned,
    /// Cancelled, or the reservation expired: compensate whatever was done.
    OrderCancelled,
    ChargeSucceeded {
        payment_id: String,
    },
    ChargeDeclined {
        reason: String,
    },
    ChargeOutcomeUnknown,
    RefundSucceeded,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub state: PaymentState,
    pub emit: Vec<Event>,
    /// The processor's answer this input settled, to record.
    pub record: Option<TransactionRecord>,
    /// A charge or a refund became due: wake the workers.
    pub newly_due: bool,
}

/// A charge claimed by a worker counts as attempted from then on: a cancellation arriving while
/// the call is in flight must wait for its outcome (and refund it) rather than forget it. The
/// payment database's claim sets the same flag in the statement that claims the row.
pub fn claim_charge(state: &PaymentState) -> PaymentState {
    PaymentState {
        attempted: true,
        ..state.clone()
    }
}

/// The record an input would settle: (kind, status, provider reference).
fn settles(input: &PaymentInput) -> Option<(TransactionKind, TransactionStatus, Option<String>)> {
    match input {
        PaymentInput::ChargeSucceeded { payment_id } => Some((
            TransactionKind::Charge,
            TransactionStatus::Succeeded,
            Some(payment_id.clone()),
        )),
        PaymentInput::ChargeDeclined { reason } => Some((
            TransactionKind::Charge,
            TransactionStatus::Declined,
            Some(reason.clone()),
        )),
        PaymentInput::RefundSucceeded => {
            Some((TransactionKind::Refund, TransactionStatus::Succeeded, None))
        }
        _ => None,
    }
}

/// Applies one input to an order's payment: the new state, the events to publish, the
/// transaction to record (only when the input settled the charge or the refund, not for a
/// duplicate or stale answer), and whether work became due.
pub fn decide(order_id: &str, state: &PaymentState, input: PaymentInput) -> Decision {
    let settled = settles(&input);
    let (next, emit) = step(order_id, state, input);
    let record = settled.and_then(|(kind, status, provider_reference)| {
        let changed = match kind {
            TransactionKind::Charge => next.charge != state.charge,
            TransactionKind::Refund => next.refund != state.refund,
        };
        let terms = next.terms.as_ref().filter(|_| changed)?;
        Some(TransactionRecord {
            kind,
            status,
            amount_minor: terms.amount_minor,
            currency: terms.currency.clone(),
            provider_reference,
        })
    });
    let newly_due = (next.charge == ChargeStatus::Due && state.charge != ChargeStatus::Due)
        || (next.refund == RefundStatus::Due && state.refund != RefundStatus::Due);
    Decision {
        state: next,
        emit,
        record,
        newly_due,
    }
}

fn step(order_id: &str, state: &PaymentState, input: PaymentInput) -> (PaymentState, Vec<Event>) {
    let mut next = state.clone();
    let mut emit = Vec::new();
    match input {
        // The first terms win: a redelivered OrderCreated cannot change what is charged.
        PaymentInput::OrderCreated(terms) if next.terms.is_none() => next.terms = Some(terms),
        PaymentInput::StockReserved => next.stock_reserved = true,
        PaymentInput::OrderAbandoned | PaymentInput::OrderCancelled => {
            next.cancelled = true;
            if next.charge == ChargeStatus::Succeeded && next.refund == RefundStatus::None {
                next.refund = RefundStatus::Due;
            }
        }
        PaymentInput::ChargeSucceeded { payment_id } if next.charge == ChargeStatus::Due => {
            next.charge = ChargeStatus::Succeeded;
            next.payment_id = Some(payment_id.clone());
            if let Some(terms) = &next.terms {
                emit.push(
                    PaymentSucceeded {
                        order_id: order_id.to_owned(),
                        payment_id,
                        amount_minor: terms.amount_minor,
                        currency: terms.currency.clone(),
                    }
                    .into(),
                );
            }
            if next.cancelled {
                next.refund = RefundStatus::Due;
            }
        }
        PaymentInput::ChargeDeclined { reason } if next.charge == ChargeStatus::Due => {
            next.charge = ChargeStatus::Declined;
            emit.push(
                PaymentFailed {
                    order_id: order_id.to_owned(),
                    reason,
                }
                .into(),
            );
        }
        PaymentInput::ChargeOutcomeUnknown if next.charge == ChargeStatus::Due => {
            next.attempted = true
        }
        PaymentInput::RefundSucceeded if next.refund == RefundStatus::Due => {
            next.refund = RefundStatus::Refunded;
            if let (Some(terms), Some(payment_id)) = (&next.terms, &next.payment_id) {
                emit.push(
                    PaymentRefunded {
                        order_id: order_id.to_owned(),
                        payment_id: payment_id.clone(),
                        amount_minor: terms.amount_minor,
                        currency: terms.currency.clone(),
                    }
                    .into(),
                );
            }
        }
        // Worker results for a charge that is no longer due: a duplicate or stale answer.
        _ => {}
    }
    next.charge = settle_charge(&next);
    (next, emit)
}

/// Whether the charge is waiting, due or abandoned follows from what is known.
fn settle_charge(state: &PaymentState) -> ChargeStatus {
    match state.charge {
        ChargeStatus::Waiting | ChargeStatus::Due => {
            if state.cancelled && !state.attempted {
                ChargeStatus::Abandoned
            } else if state.terms.is_some() && (state.stock_reserved || state.attempted) {
                ChargeStatus::Due
            } else {
                ChargeStatus::Waiting
            }
        }
        settled => settled,
    }
}

/// What a transaction's events changed in the payments, to be stored in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentChanges {
    /// The final state of every payment that changed, by order id.
    pub states: Vec<(String, PaymentState)>,
    /// The processor's answers settled, by order id, in the order they were applied.
    pub records: Vec<(String, TransactionRecord)>,
    /// A charge or a refund became due: wake the workers.
    pub newly_due: bool,
}

impl PaymentChanges {
    pub fn is_empty(&self) -> bool {
        self.states.is_empty() && self.records.is_empty() && !self.newly_due
    }
}

/// The payments a transaction locked, and what the inputs it applies do to them: [`decide`]
/// folded over several orders, so that a consumer's batch is loaded once and saved once
/// whatever its size. Each input sees what the ones before it did. A payment absent from the
/// book starts as a new one ([`PaymentState::default`]).
#[derive(Debug, Clone, Default)]
pub struct PaymentBook {
    states: HashMap<String, PaymentState>,
    changed: BTreeSet<String>,
    records: Vec<(String, TransactionRecord)>,
    newly_due: bool,
}

impl PaymentBook {
    pub fn new(states: impl IntoIterator<Item = (String, PaymentState)>) -> Self {
        Self {
            states: states.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Applies `input` to the payment of `order_id`; returns the events to publish and whether
    /// the payment changed.
    pub fn apply(&mut self, order_id: &str, input: PaymentInput) -> (Vec<Event>, bool) {
        let state = self.states.entry(order_id.to_owned()).or_default();
        let decision = decide(order_id, state, input);
        let changed = decision.state != *state;
        if changed {
            *state = decision.state;
            self.changed.insert(order_id.to_owned());
        }
        if let Some(record) = decision.record {
            self.records.push((order_id.to_owned(), record));
        }
        self.newly_due |= decision.newly_due;
        (decision.emit, changed)
    }

    /// Everything the applied inputs changed.
    pub fn changes(&self) -> PaymentChanges {
        PaymentChanges {
            states: self
                .changed
                .iter()
                .filter_map(|id| Some((id.clone(), self.states.get(id)?.clone())))
                .collect(),
            records: self.records.clone(),
            newly_due: self.newly_due,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = "order-1";

    fn terms() -> Terms {
        Terms {
            amount_minor: 3998,
            currency: "EUR".into(),
            payment_token: "tok_visa".into(),
        }
    }

    fn given(inputs: &[PaymentInput]) -> (PaymentState, Vec<Event>) {
        inputs.iter().fold(
            (PaymentState::default(), Vec::new()),
            |(state, mut emitted), input| {
                let decision = decide(ORDER, &state, input.clone());
                emitted.extend(decision.emit);
                (decision.state, emitted)
            },
        )
    }

    fn succeeded() -> PaymentInput {
        PaymentInput::ChargeSucceeded {
            payment_id: "pi_1".into(),
        }
    }

    #[test]
    fn a_charge_is_due_once_terms_and_stock_are_known_in_either_order() {
        let (state, _) = given(&[PaymentInput::OrderCreated(terms())]);
        assert_eq!(state.charge, ChargeStatus::Waiting);
        let (state, _) = given(&[
            PaymentInput::OrderCreated(terms()),
            PaymentInput::StockReserved,
        ]);
        assert_eq!(state.charge, ChargeStatus::Due);
        let (state, _) = given(&[
            PaymentInput::StockReserved,
            PaymentInput::OrderCreated(terms()),
        ]);
        assert_eq!(state.charge, ChargeStatus::Due);
    }

    #[test]
    fn a_successful_charge_is_announced_once() {
        let (state, emitted) = given(&[
            PaymentInput::OrderCreated(terms()),
            PaymentInput::StockReserved,
            succeeded(),
            succeeded(),
        ]);
        assert_eq!(state.charge, ChargeStatus::Succeeded);
        assert_eq!(
            emitted,
            vec![Event::from(PaymentSucceeded {
                order_id: ORDER.into(),
                payment_id: "pi_1".into(),
                amount_minor: 3998,
                currency: "EUR".into()
            })]
        );
    }

    #[test]
    fn a_decline_fails_the_payment_with_its_reason() {
        let (state, emitted) = given(&[
            PaymentInput::OrderCreated(terms()),
            PaymentInput::StockReserved,
            PaymentInput::ChargeDeclined {
                reason: "card_declined".into(),
            },
        ]);
        assert_eq!(state.charge, ChargeStatus::Declined);
        assert_eq!(
            emitted,
            vec![Event::from(PaymentFailed {
                order_id: ORDER.into(),
                reason: "card_declined".into()
            })]
        );
    }

    #[test]
    fn an_order_cancelled_before_the_charge_is_never_charged() {
        let (state, emitted) = given(&[
            PaymentInput::OrderCreated(terms()),
            PaymentInput::OrderCancelled,
            PaymentInput::StockReserved,
        ]);
        assert_eq!(state.charge, ChargeStatus::Abandoned);
        assert!(emitted.is_empty());
        let (state, _) = given(&[
            PaymentInput::OrderCreated(terms()),
            PaymentInput::OrderAbandoned,
        ]);
        assert_eq!(state.charge, ChargeStatus::Abandoned);
    }

    #[test]
    fn the_late_payment_race_refunds_exactly_once() {
        let (state, emitted) = given(&[
            PaymentInput::OrderCreated(terms()),
            PaymentInput::StockReserved,
            succeeded(),
            PaymentInput::OrderCancelled,
            PaymentInput::OrderCancelled,
            PaymentInput::RefundSucceeded,
            PaymentInput::RefundSucceeded,
        ]);
        assert_eq!(state.refund, RefundStatus::Refunded);
        let refunds = emitted
            .iter()
            .filter(|e| matches!(e, Event::PaymentRefunded(_)))
            .count();
        assert_eq!(refunds, 1);
    }

    #[test]
    fn an_unknown_outcome_is_resolved_before_compensating() {
        // Timeout, then the order is cancelled: the charge stays due so the retry with the same
        // idempotency key learns the truth; if it had gone through, it is refunded.
        let (state, _) = given(&[
            PaymentInput::OrderCreated(terms()),
            PaymentInput::StockReserved,
            PaymentInput::ChargeOutcomeUnknown,
            PaymentInput::OrderCancelled,
        ]);
        assert_eq!(state.charge, ChargeStatus::Due);
        let after = decide(ORDER, &state, succeeded());
        assert_eq!(after.state.refund, RefundStatus::Due);
        let declined = decide(
            ORDER,
            &state,
            PaymentInput::ChargeDeclined {
                reason: "card_declined".into(),
            },
        );
        assert_eq!(declined.state.refund, RefundStatus::None);
    }

    #[test]
    fn only_a_settling_answer_is_recorded() {
        let (state, _) = given(&[
            PaymentInput::OrderCreated(terms()),
            PaymentInput::StockReserved,
        ]);
        let first = decide(ORDER, &state, succeeded());
        assert_eq!(
            first.record,
            Some(TransactionRecord {
                kind: TransactionKind::Charge,
                status: TransactionStatus::Succeeded,
                amount_minor: 3998,
                currency: "EUR".into(),
                provider_reference: Some("pi_1".into()),
            })
        );
        assert_eq!(decide(ORDER, &first.state, succeeded()).record, None);
        let due = decide(
            ORDER,
            &PaymentState::default(),
            PaymentInput::OrderCreated(terms()),
        );
        assert!(!due.newly_due);
        assert!(decide(ORDER, &due.state, PaymentInput::StockReserved).newly_due);
    }

    #[test]
    fn a_claimed_charge_cancelled_in_flight_is_resolved_then_refunded() {
        let (state, _) = given(&[
            PaymentInput::OrderCreated(terms()),
            PaymentInput::StockReserved,
        ]);
        let claimed = claim_charge(&state);
        let cancelled = decide(ORDER, &claimed, PaymentInput::OrderCancelled).state;
        assert_eq!(cancelled.charge, ChargeStatus::Due);
        let charged = decide(ORDER, &cancelled, succeeded()).state;
        assert_eq!(charged.refund, RefundStatus::Due);
        for status in ChargeStatus::ALL {
            assert_eq!(status.as_str().parse::<ChargeStatus>(), Ok(*status));
        }
        for status in RefundStatus::ALL {
            assert_eq!(status.as_str().parse::<RefundStatus>(), Ok(*status));
        }
    }

    #[test]
    fn a_duplicate_order_created_keeps_the_first_terms() {
        let mut other = terms();
        other.amount_minor = 1;
        let (state, _) = given(&[
            PaymentInput::OrderCreated(terms()),
            PaymentInput::OrderCreated(other),
        ]);
        assert_eq!(state.terms.map(|t| t.amount_minor), Some(3998));
    }

    #[test]
    fn terms_and_stock_in_one_batch_make_one_charge_due_and_wake_the_workers() {
        // Given no payment yet for the order
        let mut book = PaymentBook::default();
        // When its terms and its stock arrive in one batch, the stock twice
        let (_, created) = book.apply(ORDER, PaymentInput::OrderCreated(terms()));
        let (_, reserved) = book.apply(ORDER, PaymentInput::StockReserved);
        let (_, again) = book.apply(ORDER, PaymentInput::StockReserved);
        // Then the payment is stored once, due, and the workers are woken
        assert_eq!((created, reserved, again), (true, true, false));
        let changes = book.changes();
        assert_eq!(changes.states.len(), 1);
        assert_eq!(changes.states[0].1.charge, ChargeStatus::Due);
        assert!(changes.newly_due);
        assert!(changes.records.is_empty());
    }

    #[test]
    fn a_settled_charge_is_recorded_with_its_order_and_published() {
        let (due, _) = given(&[
            PaymentInput::OrderCreated(terms()),
            PaymentInput::StockReserved,
        ]);
        let mut book = PaymentBook::new([(ORDER.to_owned(), claim_charge(&due))]);
        let (emitted, changed) = book.apply(ORDER, succeeded());
        assert!(changed);
        assert!(matches!(emitted.as_slice(), [Event::PaymentSucceeded(_)]));
        let changes = book.changes();
        assert_eq!(changes.records.len(), 1);
        assert_eq!(changes.records[0].0, ORDER);
        assert_eq!(changes.records[0].1.status, TransactionStatus::Succeeded);
        assert!(PaymentBook::default().changes().is_empty());
    }
}
