//! The payment provider: the card processor that actually moves money, behind a trait so the
//! saga does not care which one it is. [`HttpPaymentProvider`] speaks Stripe's PaymentIntents
//! and Refunds API, which the workspace's simulator (`payment-gateway`) implements, so a real
//! Stripe-compatible processor is a matter of configuration (`base_url`, `api_key`).
//!
//! The provider makes one attempt per call. Retrying is the caller's decision, and it is safe
//! only because every request carries the caller's idempotency key: a processor that already
//! handled a key answers a retry with the stored result instead of charging again. The one
//! exception is below the call: a request whose connection closed before any answer (a
//! kept-alive connection the processor was closing) goes out once more on a new connection,
//! under the same key (see `platform::http::client`).
//!
//! Keys are per operation, as with Stripe: a key used for a charge cannot be reused for a refund
//! (the processor refuses it as a different request), so derive distinct keys, e.g. the order id
//! for its charge and `refund-<order id>` for its refund.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use platform::http::client::{HttpClient, error_chain};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    pub idempotency_key: String,
    pub amount_minor: i64,
    pub currency: String,
    pub payment_token: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Succeeded {
        payment_id: String,
    },
    /// The card was refused. `reason` is the processor's most specific code: the issuer's
    /// decline code when it names one (`insufficient_funds`, `expired_card`, ...), otherwise
    /// the error code (`card_declined`).
    Declined {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub idempotency_key: String,
    pub payment_id: String,
    pub amount_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub refund_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The outcome is unknown or the processor is temporarily unable: timeouts, connection
    /// errors, 5xx, 409 (the same key is still being processed), 429. Safe to retry with the
    /// same idempotency key; the charge may already have happened, and the retry will say so.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    /// The processor refused the request itself (4xx other than a decline): invalid
    /// parameters, an idempotency key reused for a different request, a bad API key, a refund
    /// of more than remains. Retrying the same request will not help.
    #[error("payment provider rejected the request: {0}")]
    Rejected(String),
}

pub trait PaymentProvider: Send + Sync + 'static {
    fn charge(
        &self,
        request: &ChargeRequest,
    ) -> impl Future<Output = Result<ChargeOutcome, ProviderError>> + Send;
    fn refund(
        &self,
        request: &RefundRequest,
    ) -> impl Future<Output = Result<Refund, ProviderError>> + Send;
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct ProviderSettings {
    /// Where the Stripe-compatible API lives, without the `/v1`.
    pub base_url: String,
    /// Secret key sent as `Authorization: Bearer <key>`; the simulator accepts any `sk_test_*`.
    pub api_key: String,
    /// Upper bound on one attempt, connecting and reading the answer included. A call that runs
    /// out of time ends as [`ProviderError::Unavailable`].
    pub timeout_ms: u64,
    /// How long an idle connection to the processor is kept for the next call. It must be
    /// shorter than the processor's keep-alive (the simulator's `http.keep_alive_ms`, 15 s by
    /// default), so the client gives a connection up before the processor closes it.
    pub pool_idle_timeout_ms: u64,
}

impl Default for ProviderSettings {
    /// The simulator as `make run` starts it.
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8089".into(),
            api_key: "sk_test_bazaar".into(),
            timeout_ms: 3_000,
            pool_idle_timeout_ms: 10_000,
        }
    }
}

// By hand, so that logging the service's configuration never prints the secret key.
impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("timeout_ms", &self.timeout_ms)
            .field("pool_idle_timeout_ms", &self.pool_idle_timeout_ms)
            .finish()
    }
}

/// A [`PaymentProvider`] over a Stripe-compatible HTTP API.
#[derive(Clone)]
pub struct HttpPaymentProvider {
    client: HttpClient,
    base_url: String,
    api_key: String,
}

impl fmt::Debug for HttpPaymentProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPaymentProvider")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl HttpPaymentProvider {
    pub fn new(settings: &ProviderSettings) -> Self {
        let pool_idle_timeout = Duration::from_millis(settings.pool_idle_timeout_ms);
        let client = HttpClient::new(pool_idle_timeout, |builder| {
            builder
                .timeout(Duration::from_millis(settings.timeout_ms))
                // A redirect would turn a POST into a GET; it means a wrong base_url, so it is
                // reported instead of followed.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!(
                    "bazaar-payment-service/",
                    env!("CARGO_PKG_VERSION")
                ))
        })
        // Building fails only when a TLS backend cannot initialise, and none is compiled in.
        .expect("an HTTP client without TLS always builds");
        Self {
            client,
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            api_key: settings.api_key.clone(),
        }
    }

    async fn post(&self, path: &str, idempotency_key: &str, body: &Value) -> Reply {
        let request = self
            .client
            .post(&format!("{}{path}", self.base_url))
            .bearer_auth(&self.api_key)
            .header("Idempotency-Key", idempotency_key)
            .json(body);
        let sent = self.client.send(request).await;
        let response = match sent {
            Ok(response) => response,
            // Nothing was sent: the URL or a header (the idempotency key) is malformed.
            Err(error) if error.is_builder() => return Reply::Unsendable(error_chain(&error)),
            Err(error) => return Reply::Lost(error_chain(&error)),
        };
        let status = response.status();
        let request_id = response
            .headers()
            .get("request-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        // Reading the body is part of the call: a connection cut mid-answer leaves the outcome
        // as unknown as one cut before it.
        match response.bytes().await {
            Ok(body) => Reply::Answered {
                status,
                body: serde_json::from_slice(&body).ok(),
                request_id,
            },
            Err(error) => Reply::Lost(error_chain(&error)),
        }
    }
}

impl PaymentProvider for HttpPaymentProvider {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderError> {
        let mut body = json!({
            "amount": request.amount_minor,
            // Stripe documents currencies in lowercase; sending them so keeps retries
            // byte-for-byte the same request whatever case the caller used.
            "currency": request.currency.to_ascii_lowercase(),
            "payment_method": request.payment_token,
            "confirm": true,
        });
        if !request.description.is_empty() {
            body["description"] = Value::from(request.description.as_str());
        }
        let reply = self
            .post("/v1/payment_intents", &request.idempotency_key, &body)
            .await;
        let outcome = charge_outcome(reply);
        match &outcome {
            Ok(ChargeOutcome::Succeeded { payment_id }) => {
                tracing::info!(idempotency_key = %request.idempotency_key, payment_id, "charge succeeded");
            }
            Ok(ChargeOutcome::Declined { reason }) => {
                tracing::info!(idempotency_key = %request.idempotency_key, reason, "charge declined");
            }
            Err(error) => {
                tracing::warn!(idempotency_key = %request.idempotency_key, %error, "charge failed");
            }
        }
        outcome
    }

    async fn refund(&self, request: &RefundRequest) -> Result<Refund, ProviderError> {
        let body = json!({
            "payment_intent": request.payment_id,
            "amount": request.amount_minor,
        });
        let reply = self
            .post("/v1/refunds", &request.idempotency_key, &body)
            .await;
        let outcome = refund_outcome(reply);
        match &outcome {
            Ok(refund) => {
                tracing::info!(idempotency_key = %request.idempotency_key, refund_id = %refund.refund_id, "refund succeeded");
            }
            Err(error) => {
                tracing::warn!(idempotency_key = %request.idempotency_key, %error, "refund failed");
            }
        }
        outcome
    }
}

/// What came back from one call.
#[derive(Debug)]
enum Reply {
    /// No complete answer: connection refused or cut, timed out.
    Lost(String),
    /// The request could not even be built.
    Unsendable(String),
    Answered {
        status: StatusCode,
        /// `None` when the body was not JSON.
        body: Option<Value>,
        request_id: Option<String>,
    },
}

fn charge_outcome(reply: Reply) -> Result<ChargeOutcome, ProviderError> {
    let (status, body, request_id) = answered(reply)?;
    if status.is_success() {
        let intent = body.ok_or_else(|| {
            malformed(status, &request_id, "a successful answer that is not JSON")
        })?;
        let payment_id = intent["id"]
            .as_str()
            .ok_or_else(|| malformed(status, &request_id, "a payment intent without an id"))?;
        return match intent["status"].as_str() {
            Some("succeeded") => Ok(ChargeOutcome::Succeeded {
                payment_id: payment_id.to_owned(),
            }),
            // A processor may report a refused card as a 200 with the intent waiting for
            // another payment method instead of a 402.
            Some("requires_payment_method") => Ok(ChargeOutcome::Declined {
                reason: decline_reason(&intent["last_payment_error"]),
            }),
            other => Err(ProviderError::Rejected(format!(
                "payment intent {payment_id} is {}, and only one-step card payments are \
                 supported{}",
                other.unwrap_or("without a status"),
                request_suffix(&request_id)
            ))),
        };
    }
    if status == StatusCode::PAYMENT_REQUIRED {
        let error = body.as_ref().map_or(&Value::Null, |body| &body["error"]);
        return Ok(ChargeOutcome::Declined {
            reason: decline_reason(error),
        });
    }
    Err(failure(status, body.as_ref(), &request_id))
}

fn refund_outcome(reply: Reply) -> Result<Refund, ProviderError> {
    let (status, body, request_id) = answered(reply)?;
    if !status.is_success() {
        return Err(failure(status, body.as_ref(), &request_id));
    }
    let refund =
        body.ok_or_else(|| malformed(status, &request_id, "a successful answer that is not JSON"))?;
    let refund_id = refund["id"]
        .as_str()
        .ok_or_else(|| malformed(status, &request_id, "a refund without an id"))?;
    match refund["status"].as_str() {
        // `pending` is a refund the processor accepted and will pay out; nothing is left to do.
        Some("succeeded" | "pending") | None => Ok(Refund {
            refund_id: refund_id.to_owned(),
        }),
        Some(other) => Err(ProviderError::Rejected(format!(
            "refund {refund_id} is {other}{}",
            request_suffix(&request_id)
        ))),
    }
}

type Answered = (StatusCode, Option<Value>, Option<String>);

fn answered(reply: Reply) -> Result<Answered, ProviderError> {
    match reply {
        Reply::Lost(reason) => Err(ProviderError::Unavailable(reason)),
        Reply::Unsendable(reason) => Err(ProviderError::Rejected(reason)),
        Reply::Answered {
            status,
            body,
            request_id,
        } => Ok((status, body, request_id)),
    }
}

/// The processor's most specific reason for a decline, from a Stripe error object.
fn decline_reason(error: &Value) -> String {
    let code = error["code"].as_str().filter(|code| !code.is_empty());
    let decline_code = error["decline_code"]
        .as_str()
        .filter(|code| !code.is_empty() && *code != "generic_decline");
    decline_code.or(code).unwrap_or("card_declined").to_owned()
}

/// An error answer that is not a decline.
fn failure(status: StatusCode, body: Option<&Value>, request_id: &Option<String>) -> ProviderError {
    let error = body.map_or(&Value::Null, |body| &body["error"]);
    let kind = error["type"].as_str().unwrap_or("unknown_error");
    let detail = match error["code"].as_str() {
        Some(code) => format!("{kind}/{code}"),
        None => kind.to_owned(),
    };
    let message = error["message"].as_str().unwrap_or("no message");
    let text = format!(
        "HTTP {} {detail}: {message}{}",
        status.as_u16(),
        request_suffix(request_id)
    );
    let retry_helps = status.is_server_error()
        || matches!(
            status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS
        );
    // Redirects and other 4xx are answers about the request or the configuration, which a
    // retry repeats unchanged.
    if retry_helps || !(status.is_client_error() || status.is_redirection()) {
        ProviderError::Unavailable(text)
    } else {
        ProviderError::Rejected(text)
    }
}

/// A success the client cannot read. The request may have taken effect, so it counts as an
/// unknown outcome: a retry with the same key gets the stored answer again.
fn malformed(status: StatusCode, request_id: &Option<String>, what: &str) -> ProviderError {
    ProviderError::Unavailable(format!(
        "HTTP {} with {what}{}",
        status.as_u16(),
        request_suffix(request_id)
    ))
}

fn request_suffix(request_id: &Option<String>) -> String {
    request_id
        .as_ref()
        .map(|id| format!(" (request {id})"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, body: Value) -> Reply {
        Reply::Answered {
            status: StatusCode::from_u16(status).expect("status"),
            body: Some(body),
            request_id: Some("req_1".into()),
        }
    }

    fn stripe_error(kind: &str, code: &str, message: &str) -> Value {
        json!({"error": {"type": kind, "code": code, "message": message}})
    }

    #[test]
    fn a_succeeded_intent_is_a_successful_charge() {
        let outcome = charge_outcome(answered(
            200,
            json!({"id": "pi_1", "object": "payment_intent", "status": "succeeded"}),
        ));
        assert_eq!(
            outcome.expect("charged"),
            ChargeOutcome::Succeeded {
                payment_id: "pi_1".into()
            }
        );
    }

    #[test]
    fn a_generic_decline_is_reported_as_card_declined() {
        let outcome = charge_outcome(answered(
            402,
            json!({"error": {"type": "card_error", "code": "card_declined",
                             "decline_code": "generic_decline", "message": "declined"}}),
        ));
        assert_eq!(
            outcome.expect("declined"),
            ChargeOutcome::Declined {
                reason: "card_declined".into()
            }
        );
    }

    #[test]
    fn a_specific_decline_code_is_the_reason() {
        let outcome = charge_outcome(answered(
            402,
            json!({"error": {"type": "card_error", "code": "card_declined",
                             "decline_code": "insufficient_funds", "message": "no money"}}),
        ));
        assert_eq!(
            outcome.expect("declined"),
            ChargeOutcome::Declined {
                reason: "insufficient_funds".into()
            }
        );
    }

    #[test]
    fn a_402_without_a_readable_body_is_still_a_decline() {
        let outcome = charge_outcome(Reply::Answered {
            status: StatusCode::PAYMENT_REQUIRED,
            body: None,
            request_id: None,
        });
        assert_eq!(
            outcome.expect("declined"),
            ChargeOutcome::Declined {
                reason: "card_declined".into()
            }
        );
    }

    #[test]
    fn an_intent_waiting_for_another_card_is_a_decline() {
        let outcome = charge_outcome(answered(
            200,
            json!({"id": "pi_1", "status": "requires_payment_method",
                   "last_payment_error": {"code": "expired_card", "decline_code": "expired_card"}}),
        ));
        assert_eq!(
            outcome.expect("declined"),
            ChargeOutcome::Declined {
                reason: "expired_card".into()
            }
        );
    }

    #[test]
    fn an_intent_needing_customer_action_is_rejected() {
        let outcome = charge_outcome(answered(
            200,
            json!({"id": "pi_1", "status": "requires_action"}),
        ));
        assert!(
            matches!(&outcome, Err(ProviderError::Rejected(message)) if message.contains("requires_action")),
            "{outcome:?}"
        );
    }

    #[test]
    fn server_errors_and_lost_answers_are_retryable() {
        for status in [500, 502, 503, 504, 409, 429, 408] {
            let outcome = charge_outcome(answered(
                status,
                stripe_error("api_error", "x", "try later"),
            ));
            assert!(
                matches!(outcome, Err(ProviderError::Unavailable(_))),
                "{status}: {outcome:?}"
            );
        }
        let lost = charge_outcome(Reply::Lost("operation timed out".into()));
        assert!(
            matches!(lost, Err(ProviderError::Unavailable(message)) if message.contains("timed out"))
        );
    }

    #[test]
    fn redirects_and_unsendable_requests_are_rejected() {
        let outcome = charge_outcome(answered(301, json!(null)));
        assert!(
            matches!(&outcome, Err(ProviderError::Rejected(message)) if message.starts_with("HTTP 301")),
            "{outcome:?}"
        );
        let outcome = charge_outcome(Reply::Unsendable("invalid header value".into()));
        assert!(
            matches!(outcome, Err(ProviderError::Rejected(_))),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_key_that_cannot_be_a_header_is_rejected_without_a_call() {
        let provider = HttpPaymentProvider::new(&ProviderSettings {
            // Nothing listens on port 1; a request that got this far would be Unavailable.
            base_url: "http://127.0.0.1:1".into(),
            ..ProviderSettings::default()
        });
        let outcome = provider
            .charge(&ChargeRequest {
                idempotency_key: "order\n1".into(),
                amount_minor: 100,
                currency: "EUR".into(),
                payment_token: "tok_visa".into(),
                description: String::new(),
            })
            .await;
        assert!(
            matches!(outcome, Err(ProviderError::Rejected(_))),
            "{outcome:?}"
        );
    }

    #[test]
    fn an_unreadable_success_is_an_unknown_outcome() {
        let outcome = charge_outcome(Reply::Answered {
            status: StatusCode::OK,
            body: None,
            request_id: None,
        });
        assert!(
            matches!(outcome, Err(ProviderError::Unavailable(_))),
            "{outcome:?}"
        );
        let outcome = charge_outcome(answered(200, json!({"status": "succeeded"})));
        assert!(
            matches!(outcome, Err(ProviderError::Unavailable(_))),
            "{outcome:?}"
        );
    }

    #[test]
    fn client_errors_are_rejections_naming_type_code_and_request() {
        let outcome = charge_outcome(answered(
            400,
            json!({"error": {"type": "idempotency_error", "message": "same parameters"}}),
        ));
        let Err(ProviderError::Rejected(message)) = outcome else {
            panic!("expected a rejection, got {outcome:?}");
        };
        assert_eq!(
            message,
            "HTTP 400 idempotency_error: same parameters (request req_1)"
        );
        let outcome = refund_outcome(answered(
            400,
            stripe_error(
                "invalid_request_error",
                "charge_already_refunded",
                "refunded",
            ),
        ));
        let Err(ProviderError::Rejected(message)) = outcome else {
            panic!("expected a rejection");
        };
        assert!(
            message.contains("invalid_request_error/charge_already_refunded"),
            "{message}"
        );
        let outcome = charge_outcome(answered(
            401,
            stripe_error("invalid_request_error", "x", "key"),
        ));
        assert!(matches!(outcome, Err(ProviderError::Rejected(_))));
    }

    #[test]
    fn succeeded_and_pending_refunds_are_refunds() {
        for status in ["succeeded", "pending"] {
            let outcome = refund_outcome(answered(
                200,
                json!({"id": "re_1", "object": "refund", "status": status}),
            ));
            assert_eq!(
                outcome.expect("refunded"),
                Refund {
                    refund_id: "re_1".into()
                }
            );
        }
        let failed = refund_outcome(answered(200, json!({"id": "re_1", "status": "failed"})));
        assert!(matches!(failed, Err(ProviderError::Rejected(_))));
    }

    #[test]
    fn a_decline_status_on_a_refund_is_not_a_decline() {
        let outcome = refund_outcome(answered(402, stripe_error("card_error", "x", "no")));
        assert!(
            matches!(outcome, Err(ProviderError::Rejected(_))),
            "{outcome:?}"
        );
    }

    #[test]
    fn settings_default_to_the_local_simulator_and_hide_the_key() {
        let settings = ProviderSettings::default();
        assert_eq!(settings.base_url, "http://127.0.0.1:8089");
        assert_eq!(settings.api_key, "sk_test_bazaar");
        assert_eq!(settings.timeout_ms, 3_000);
        assert!(!format!("{settings:?}").contains("sk_test_bazaar"));
        let provider = HttpPaymentProvider::new(&settings);
        assert!(!format!("{provider:?}").contains("sk_test_bazaar"));
    }
}
