//! Payments: when an order is charged, when it is refunded, and that it is charged at most once.
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

use events::{Event, PaymentFailed, PaymentRefunded, PaymentSucceeded};
use serde::{Deserialize, Serialize};

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
}

/// Applies one input to an order's payment.
pub fn decide(order_id: &str, state: &PaymentState, input: PaymentInput) -> Decision {
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
    Decision { state: next, emit }
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
    fn a_duplicate_order_created_keeps_the_first_terms() {
        let mut other = terms();
        other.amount_minor = 1;
        let (state, _) = given(&[
            PaymentInput::OrderCreated(terms()),
            PaymentInput::OrderCreated(other),
        ]);
        assert_eq!(state.terms.map(|t| t.amount_minor), Some(3998));
    }
}
