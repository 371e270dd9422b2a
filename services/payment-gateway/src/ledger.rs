//! The simulator's memory: payment intents, refunds and the answers stored under idempotency
//! keys. It lives in the process and is lost on restart, which is fine for a simulator (a
//! restart is a fresh test account). One lock covers each whole request, so two concurrent
//! requests with the same key can never both charge.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::domain::{self, CardOutcome, Decline, Fingerprint, KeyMatch, PaymentStatus};
use crate::wire::{Answer, ApiFailure};

pub const PAYMENT_INTENTS: &str = "POST /v1/payment_intents";
pub const REFUNDS: &str = "POST /v1/refunds";

#[derive(Debug, Default)]
pub struct Ledger {
    book: Mutex<Book>,
}

#[derive(Debug, Default)]
struct Book {
    intents: Vec<Intent>,
    intent_index: HashMap<String, usize>,
    refunds: Vec<RefundRecord>,
    answers: HashMap<String, StoredAnswer>,
}

#[derive(Debug)]
struct StoredAnswer {
    fingerprint: Fingerprint,
    status: u16,
    body: Value,
}

#[derive(Debug)]
struct Intent {
    id: String,
    /// Stripe's Charge behind a confirmed intent; declined attempts have one too.
    charge: String,
    idempotency_key: String,
    amount: i64,
    currency: String,
    status: PaymentStatus,
    payment_method: String,
    description: Option<String>,
    metadata: BTreeMap<String, String>,
    decline: Option<Decline>,
    amount_refunded: i64,
    created: u64,
}

#[derive(Debug)]
struct RefundRecord {
    id: String,
    payment_intent: String,
    charge: String,
    idempotency_key: String,
    amount: i64,
    currency: String,
    reason: Option<String>,
    metadata: BTreeMap<String, String>,
    created: u64,
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::new_v4().simple())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

impl Ledger {
    fn book(&self) -> MutexGuard<'_, Book> {
        // Every mutation completes before it can panic, so a poisoned book is still consistent.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `POST /v1/payment_intents` with `confirm: true`: creates the intent and charges the card.
    pub fn create_payment_intent(&self, key: &str, params: Value) -> Answer {
        self.idempotent(key, PAYMENT_INTENTS, params, |book, params| {
            let params = domain::parse_charge(params)?;
            let (status, decline) = match params.outcome {
                CardOutcome::Approved => (PaymentStatus::Succeeded, None),
                CardOutcome::Declined(decline) => {
                    (PaymentStatus::RequiresPaymentMethod, Some(decline))
                }
            };
            let intent = Intent {
                id: new_id("pi"),
                charge: new_id("ch"),
                idempotency_key: key.to_owned(),
                amount: params.amount,
                currency: params.currency,
                status,
                payment_method: params.payment_method,
                description: params.description,
                metadata: params.metadata,
                decline,
                amount_refunded: 0,
                created: now(),
            };
            let rendered = intent.render();
            tracing::info!(
                payment_intent = %intent.id,
                idempotency_key = key,
                amount = intent.amount,
                currency = %intent.currency,
                status = intent.status.as_str(),
                "payment intent confirmed"
            );
            book.intent_index
                .insert(intent.id.clone(), book.intents.len());
            book.intents.push(intent);
            match decline {
                None => Ok(Answer::ok(rendered)),
                // A decline is a processed request: Stripe stores it like a success, so a
                // retry gets the same decline rather than a second attempt on the card.
                Some(decline) => {
                    let mut answer = ApiFailure {
                        code: Some(decline.code),
                        decline_code: Some(decline.decline_code),
                        ..ApiFailure::new(402, "card_error", decline.message)
                    }
                    .into_answer();
                    answer.body["error"]["payment_intent"] = rendered;
                    Ok(answer)
                }
            }
        })
    }

    /// `POST /v1/refunds`: returns all or part of a captured payment.
    pub fn create_refund(&self, key: &str, params: Value) -> Answer {
        self.idempotent(key, REFUNDS, params, |book, params| {
            let params = domain::parse_refund(params)?;
            let index = book
                .intent_index
                .get(&params.payment_intent)
                .copied()
                .ok_or_else(|| {
                    ApiFailure {
                        status: 400,
                        ..ApiFailure::not_found("payment_intent", &params.payment_intent)
                    }
                    .param("payment_intent")
                })?;
            let intent = &mut book.intents[index];
            let amount = domain::refund_amount(
                intent.status,
                intent.amount,
                intent.amount_refunded,
                params.amount,
            )
            .map_err(|rejection| {
                ApiFailure::invalid_request(rejection.message(&intent.id)).code(rejection.code())
            })?;
            intent.amount_refunded += amount;
            let refund = RefundRecord {
                id: new_id("re"),
                payment_intent: intent.id.clone(),
                charge: intent.charge.clone(),
                idempotency_key: key.to_owned(),
                amount,
                currency: intent.currency.clone(),
                reason: params.reason,
                metadata: params.metadata,
                created: now(),
            };
            tracing::info!(
                refund = %refund.id,
                payment_intent = %refund.payment_intent,
                idempotency_key = key,
                amount,
                "refund created"
            );
            let rendered = refund.render();
            book.refunds.push(refund);
            Ok(Answer::ok(rendered))
        })
    }

    /// Runs `apply` unless `key` already answered: a retry of the same request replays that
    /// answer, and a different request under the same key is refused. Answers from `Ok` are
    /// stored; `Err` means the request was refused before it did anything, and Stripe stores
    /// nothing then, so a corrected request may reuse the key.
    fn idempotent<F>(&self, key: &str, endpoint: &'static str, params: Value, apply: F) -> Answer
    where
        F: FnOnce(&mut Book, &Value) -> Result<Answer, ApiFailure>,
    {
        let incoming = Fingerprint { endpoint, params };
        let mut book = self.book();
        if let Some(stored) = book.answers.get(key) {
            match domain::match_key(key, Some(&stored.fingerprint), &incoming) {
                KeyMatch::Replay => {
                    return Answer {
                        status: stored.status,
                        body: stored.body.clone(),
                        replayed: true,
                    };
                }
                KeyMatch::Conflict(message) => {
                    return ApiFailure::idempotency(message).into_answer();
                }
                KeyMatch::Fresh => {}
            }
        }
        match apply(&mut book, &incoming.params) {
            Ok(answer) => {
                book.answers.insert(
                    key.to_owned(),
                    StoredAnswer {
                        fingerprint: incoming,
                        status: answer.status,
                        body: answer.body.clone(),
                    },
                );
                answer
            }
            Err(failure) => failure.into_answer(),
        }
    }

    /// `GET /v1/payment_intents/{id}`: the intent as it is now.
    pub fn payment_intent(&self, id: &str) -> Answer {
        let book = self.book();
        match book.intent_index.get(id) {
            Some(&index) => Answer::ok(book.intents[index].render()),
            None => ApiFailure::not_found("payment_intent", id)
                .param("intent")
                .into_answer(),
        }
    }

    /// Everything charged and refunded, oldest first, for tests' invariant checks.
    pub fn report(&self) -> Value {
        let book = self.book();
        let charges: Vec<Value> = book
            .intents
            .iter()
            .map(|intent| {
                json!({
                    "payment_intent": intent.id,
                    "charge": intent.charge,
                    "idempotency_key": intent.idempotency_key,
                    "amount": intent.amount,
                    "currency": intent.currency,
                    "status": if intent.status == PaymentStatus::Succeeded { "succeeded" } else { "failed" },
                    "failure_code": intent.decline.map(|decline| decline.decline_code),
                    "description": intent.description,
                    "metadata": intent.metadata,
                    "amount_refunded": intent.amount_refunded,
                    "created": intent.created,
                })
            })
            .collect();
        let refunds: Vec<Value> = book
            .refunds
            .iter()
            .map(|refund| {
                json!({
                    "id": refund.id,
                    "payment_intent": refund.payment_intent,
                    "idempotency_key": refund.idempotency_key,
                    "amount": refund.amount,
                    "currency": refund.currency,
                    "created": refund.created,
                })
            })
            .collect();
        json!({ "charges": charges, "refunds": refunds })
    }
}

impl Intent {
    fn render(&self) -> Value {
        let succeeded = self.status == PaymentStatus::Succeeded;
        json!({
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_received": if succeeded { self.amount } else { 0 },
            "currency": self.currency,
            "status": self.status.as_str(),
            "capture_method": "automatic",
            "confirmation_method": "automatic",
            "payment_method": self.payment_method,
            "description": self.description,
            "metadata": self.metadata,
            "latest_charge": self.charge,
            "last_payment_error": self.decline.map(|decline| json!({
                "type": "card_error",
                "code": decline.code,
                "decline_code": decline.decline_code,
                "message": decline.message,
            })),
            "created": self.created,
            "livemode": false,
        })
    }
}

impl RefundRecord {
    fn render(&self) -> Value {
        json!({
            "id": self.id,
            "object": "refund",
            "amount": self.amount,
            "currency": self.currency,
            "payment_intent": self.payment_intent,
            "charge": self.charge,
            "status": "succeeded",
            "reason": self.reason,
            "metadata": self.metadata,
            "created": self.created,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(amount: i64, token: &str) -> Value {
        json!({"amount": amount, "currency": "eur", "payment_method": token, "confirm": true})
    }

    #[test]
    fn a_retry_replays_the_first_answer_and_charges_once() {
        let ledger = Ledger::default();
        let first = ledger.create_payment_intent("order-1", charge(1000, "tok_visa"));
        let again = ledger.create_payment_intent("order-1", charge(1000, "tok_visa"));
        assert_eq!(first.status, 200);
        assert!(!first.replayed);
        assert!(again.replayed);
        assert_eq!(again.body["id"], first.body["id"]);
        assert_eq!(ledger.report()["charges"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn an_invalid_request_stores_nothing_under_its_key() {
        let ledger = Ledger::default();
        let refused = ledger.create_payment_intent("order-1", charge(0, "tok_visa"));
        assert_eq!(refused.status, 400);
        let corrected = ledger.create_payment_intent("order-1", charge(100, "tok_visa"));
        assert_eq!(corrected.status, 200);
        assert!(!corrected.replayed);
    }

    #[test]
    fn a_decline_is_stored_and_replayed() {
        let ledger = Ledger::default();
        let first = ledger.create_payment_intent("order-1", charge(100, "tok_chargeDeclined"));
        let again = ledger.create_payment_intent("order-1", charge(100, "tok_chargeDeclined"));
        assert_eq!((first.status, again.status), (402, 402));
        assert!(again.replayed);
        assert_eq!(
            again.body["error"]["payment_intent"]["id"],
            first.body["error"]["payment_intent"]["id"]
        );
        assert_eq!(
            first.body["error"]["payment_intent"]["status"],
            "requires_payment_method"
        );
    }

    #[test]
    fn refunds_cannot_exceed_the_charge() {
        let ledger = Ledger::default();
        let paid = ledger.create_payment_intent("order-1", charge(1000, "tok_visa"));
        let id = paid.body["id"].clone();
        let part = ledger.create_refund("r1", json!({"payment_intent": id, "amount": 600}));
        assert_eq!(part.status, 200);
        let too_much = ledger.create_refund("r2", json!({"payment_intent": id, "amount": 401}));
        assert_eq!(too_much.status, 400);
        assert_eq!(too_much.body["error"]["code"], "amount_too_large");
        let rest = ledger.create_refund("r3", json!({"payment_intent": id}));
        assert_eq!(rest.body["amount"], 400);
        let report = ledger.report();
        assert_eq!(report["charges"][0]["amount_refunded"], 1000);
        assert_eq!(report["refunds"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn a_charge_key_cannot_be_reused_for_a_refund() {
        let ledger = Ledger::default();
        let paid = ledger.create_payment_intent("order-1", charge(1000, "tok_visa"));
        let refund = ledger.create_refund("order-1", json!({"payment_intent": paid.body["id"]}));
        assert_eq!(refund.status, 400);
        assert_eq!(refund.body["error"]["type"], "idempotency_error");
    }

    #[test]
    fn unknown_intents_are_missing_resources() {
        let ledger = Ledger::default();
        assert_eq!(ledger.payment_intent("pi_nope").status, 404);
        let refund = ledger.create_refund("r1", json!({"payment_intent": "pi_nope"}));
        assert_eq!(
            (refund.status, &refund.body["error"]["code"]),
            (400, &json!("resource_missing"))
        );
    }
}
