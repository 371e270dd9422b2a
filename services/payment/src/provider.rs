//! The payment provider: the card processor that actually moves money, behind a trait so the
//! saga does not care which one it is. Two speak to it, chosen by `provider.kind`:
//!
//! - [`HttpPaymentProvider`] (`simulator`, the default) speaks the JSON dialect of Stripe's
//!   PaymentIntents and Refunds API that the workspace's simulator (`payment-gateway`) serves,
//!   with its fault injection;
//! - [`StripeProvider`] (`stripe`) speaks Stripe's real API: form-encoded requests, a pinned
//!   `Stripe-Version`, Stripe's test cards, `Stripe-Should-Retry`.
//!
//! Both read the same Stripe objects and error shapes, so what an answer means (success, decline,
//! retry, give up) is decided once, here.
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

mod stripe;

pub use stripe::{StripeProvider, StripeSettings};

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

/// Which card processor the payment service charges through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// The simulator (`payment-gateway`), at `provider.base_url`: the default, with fault
    /// injection.
    Simulator,
    /// Stripe's real API, at `provider.stripe.base_url`.
    Stripe,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct ProviderSettings {
    pub kind: ProviderKind,
    /// Where the simulator's API lives, without the `/v1`.
    pub base_url: String,
    /// Secret key sent to the simulator as `Authorization: Bearer <key>`; it accepts any
    /// `sk_test_*`.
    pub api_key: String,
    /// Upper bound on one attempt, connecting and reading the answer included. A call that runs
    /// out of time ends as [`ProviderError::Unavailable`].
    pub timeout_ms: u64,
    /// How long an idle connection to the processor is kept for the next call. It must be
    /// shorter than the processor's keep-alive (the simulator's `http.keep_alive_ms`, 15 s by
    /// default), so the client gives a connection up before the processor closes it.
    pub pool_idle_timeout_ms: u64,
    /// Used when `kind` is `stripe`.
    pub stripe: StripeSettings,
}

impl Default for ProviderSettings {
    /// The simulator as `make run` starts it.
    fn default() -> Self {
        Self {
            kind: ProviderKind::Simulator,
            base_url: "http://127.0.0.1:8089".into(),
            api_key: "sk_test_bazaar".into(),
            timeout_ms: 3_000,
            pool_idle_timeout_ms: 10_000,
            stripe: StripeSettings::default(),
        }
    }
}

// By hand, so that logging the service's configuration never prints the secret key.
impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("timeout_ms", &self.timeout_ms)
            .field("pool_idle_timeout_ms", &self.pool_idle_timeout_ms)
            .field("stripe", &self.stripe)
            .finish()
    }
}

/// The provider `provider.kind` names, as the payment service runs it.
#[derive(Debug, Clone)]
pub enum ConfiguredProvider {
    Simulator(HttpPaymentProvider),
    Stripe(StripeProvider),
}

impl ConfiguredProvider {
    /// Fails on settings the chosen provider cannot work with (Stripe without a key).
    pub fn new(settings: &ProviderSettings) -> anyhow::Result<Self> {
        Ok(match settings.kind {
            ProviderKind::Simulator => Self::Simulator(HttpPaymentProvider::new(settings)),
            ProviderKind::Stripe => Self::Stripe(StripeProvider::new(settings)?),
        })
    }
}

impl PaymentProvider for ConfiguredProvider {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderError> {
        match self {
            Self::Simulator(provider) => provider.charge(request).await,
            Self::Stripe(provider) => provider.charge(request).await,
        }
    }

    async fn refund(&self, request: &RefundRequest) -> Result<Refund, ProviderError> {
        match self {
            Self::Simulator(provider) => provider.refund(request).await,
            Self::Stripe(provider) => provider.refund(request).await,
        }
    }
}

/// One Stripe-compatible HTTP API: the client, where the API is, and the key.
#[derive(Clone)]
struct Api {
    client: HttpClient,
    base_url: String,
    api_key: String,
    /// Sent as `Stripe-Version`, when given.
    version: Option<String>,
}

/// A request's body: JSON for the simulator, form-encoded for Stripe.
enum Body {
    Json(Value),
    Form(String),
}

impl Api {
    fn new(
        settings: &ProviderSettings,
        base_url: &str,
        api_key: &str,
        version: Option<&str>,
    ) -> Self {
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
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
            version: version.map(str::to_owned),
        }
    }

    async fn post(&self, path: &str, idempotency_key: &str, body: Body) -> Reply {
        let mut request = self
            .client
            .post(&format!("{}{path}", self.base_url))
            .bearer_auth(&self.api_key)
            .header("Idempotency-Key", idempotency_key);
        if let Some(version) = &self.version {
            request = request.header("Stripe-Version", version);
        }
        let request = match body {
            Body::Json(body) => request.json(&body),
            Body::Form(body) => request
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body),
        };
        let sent = self.client.send(request).await;
        let response = match sent {
            Ok(response) => response,
            // Nothing was sent: the URL or a header (the idempotency key) is malformed.
            Err(error) if error.is_builder() => return Reply::Unsendable(error_chain(&error)),
            Err(error) => return Reply::Lost(error_chain(&error)),
        };
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let request_id = header("request-id");
        // Stripe says whether a failed request may succeed when sent again; its own clients
        // follow it before anything else.
        let should_retry = header("stripe-should-retry").and_then(|value| match value.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        });
        // Reading the body is part of the call: a connection cut mid-answer leaves the outcome
        // as unknown as one cut before it.
        match response.bytes().await {
            Ok(body) => Reply::Answered(Answer {
                status,
                body: serde_json::from_slice(&body).ok(),
                request_id,
                should_retry,
            }),
            Err(error) => Reply::Lost(error_chain(&error)),
        }
    }

    /// A charge: creates and confirms a payment intent from `body`.
    async fn create_payment_intent(
        &self,
        request: &ChargeRequest,
        body: Body,
    ) -> Result<ChargeOutcome, ProviderError> {
        let reply = self
            .post("/v1/payment_intents", &request.idempotency_key, body)
            .await;
        let outcome = charge_outcome(reply).map_err(|error| self.redacted(error));
        let key = &request.idempotency_key;
        match &outcome {
            Ok(ChargeOutcome::Succeeded { payment_id }) => {
                tracing::info!(idempotency_key = %key, payment_id, "charge succeeded");
            }
            Ok(ChargeOutcome::Declined { reason }) => {
                tracing::info!(idempotency_key = %key, reason, "charge declined");
            }
            Err(error) => tracing::warn!(idempotency_key = %key, %error, "charge failed"),
        }
        outcome
    }

    /// A refund of a payment intent, described by `body`.
    async fn create_refund(
        &self,
        request: &RefundRequest,
        body: Body,
    ) -> Result<Refund, ProviderError> {
        let reply = self
            .post("/v1/refunds", &request.idempotency_key, body)
            .await;
        let outcome = refund_outcome(reply).map_err(|error| self.redacted(error));
        let key = &request.idempotency_key;
        match &outcome {
            Ok(refund) => {
                tracing::info!(idempotency_key = %key, refund_id = %refund.refund_id, "refund succeeded");
            }
            Err(error) => tracing::warn!(idempotency_key = %key, %error, "refund failed"),
        }
        outcome
    }

    /// An error that does not quote the secret key (a processor may echo it back).
    fn redacted(&self, error: ProviderError) -> ProviderError {
        if self.api_key.is_empty() {
            return error;
        }
        let redact = |text: String| text.replace(&self.api_key, "<api key>");
        match error {
            ProviderError::Unavailable(text) => ProviderError::Unavailable(redact(text)),
            ProviderError::Rejected(text) => ProviderError::Rejected(redact(text)),
        }
    }
}

/// A [`PaymentProvider`] over the simulator's JSON dialect of Stripe's API.
#[derive(Clone)]
pub struct HttpPaymentProvider {
    api: Api,
}

impl fmt::Debug for HttpPaymentProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPaymentProvider")
            .field("base_url", &self.api.base_url)
            .finish_non_exhaustive()
    }
}

impl HttpPaymentProvider {
    pub fn new(settings: &ProviderSettings) -> Self {
        Self {
            api: Api::new(settings, &settings.base_url, &settings.api_key, None),
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
        self.api
            .create_payment_intent(request, Body::Json(body))
            .await
    }

    async fn refund(&self, request: &RefundRequest) -> Result<Refund, ProviderError> {
        let body = json!({
            "payment_intent": request.payment_id,
            "amount": request.amount_minor,
        });
        self.api.create_refund(request, Body::Json(body)).await
    }
}

/// What came back from one call.
#[derive(Debug)]
enum Reply {
    /// No complete answer: connection refused or cut, timed out.
    Lost(String),
    /// The request could not even be built.
    Unsendable(String),
    Answered(Answer),
}

/// A complete answer.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    /// `None` when the body was not JSON.
    body: Option<Value>,
    request_id: Option<String>,
    /// Stripe's `Stripe-Should-Retry` header, when it sent one.
    should_retry: Option<bool>,
}

impl Answer {
    /// The Stripe error object of an error answer (`Null` when there is none).
    fn error(&self) -> &Value {
        self.body
            .as_ref()
            .map_or(&Value::Null, |body| &body["error"])
    }

    /// A refused card: Stripe's `card_error`, answered with 402.
    fn is_decline(&self) -> bool {
        self.status == StatusCode::PAYMENT_REQUIRED || self.error()["type"] == "card_error"
    }
}

fn charge_outcome(reply: Reply) -> Result<ChargeOutcome, ProviderError> {
    let answer = answered(reply)?;
    if answer.status.is_success() {
        let intent = successful_body(&answer, "payment intent")?;
        let payment_id = intent["id"].as_str().unwrap_or_default();
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
                request_suffix(&answer.request_id)
            ))),
        };
    }
    if answer.is_decline() {
        return Ok(ChargeOutcome::Declined {
            reason: decline_reason(answer.error()),
        });
    }
    Err(failure(&answer))
}

fn refund_outcome(reply: Reply) -> Result<Refund, ProviderError> {
    let answer = answered(reply)?;
    if !answer.status.is_success() {
        return Err(failure(&answer));
    }
    let refund = successful_body(&answer, "refund")?;
    let refund_id = refund["id"].as_str().unwrap_or_default();
    match refund["status"].as_str() {
        // `pending` is a refund the processor accepted and will pay out; nothing is left to do.
        Some("succeeded" | "pending") | None => Ok(Refund {
            refund_id: refund_id.to_owned(),
        }),
        Some(other) => Err(ProviderError::Rejected(format!(
            "refund {refund_id} is {other}{}",
            request_suffix(&answer.request_id)
        ))),
    }
}

/// The object of a successful answer, which must be JSON with an id.
fn successful_body<'a>(answer: &'a Answer, object: &str) -> Result<&'a Value, ProviderError> {
    let body = answer.body.as_ref().ok_or_else(|| {
        malformed(
            answer.status,
            &answer.request_id,
            "a successful answer that is not JSON",
        )
    })?;
    if body["id"].is_string() {
        Ok(body)
    } else {
        Err(malformed(
            answer.status,
            &answer.request_id,
            &format!("a {object} without an id"),
        ))
    }
}

fn answered(reply: Reply) -> Result<Answer, ProviderError> {
    match reply {
        Reply::Lost(reason) => Err(ProviderError::Unavailable(reason)),
        Reply::Unsendable(reason) => Err(ProviderError::Rejected(reason)),
        Reply::Answered(answer) => Ok(answer),
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

/// Stripe error codes of requests that may succeed later as they are.
const RETRYABLE_CODES: [&str; 2] = ["rate_limit", "lock_timeout"];

/// An error answer that is not a decline: retryable ([`ProviderError::Unavailable`]) or not
/// ([`ProviderError::Rejected`]). In order: Stripe's `Stripe-Should-Retry` header when sent;
/// then Stripe's error type (`api_error`: a problem on Stripe's side) and code (`rate_limit`,
/// `lock_timeout`); then the status: 5xx, 408, 409 (the same key still in progress) and 429
/// may pass. Everything else (`invalid_request_error`, `idempotency_error`, a bad key, a
/// refused card on a refund, a redirect) is an answer about the request or the configuration,
/// which a retry repeats unchanged.
fn failure(answer: &Answer) -> ProviderError {
    let error = answer.error();
    let kind = error["type"].as_str().unwrap_or("unknown_error");
    let code = error["code"].as_str();
    let detail = match code {
        Some(code) => format!("{kind}/{code}"),
        None => kind.to_owned(),
    };
    let message = error["message"].as_str().unwrap_or("no message");
    let text = format!(
        "HTTP {} {detail}: {message}{}",
        answer.status.as_u16(),
        request_suffix(&answer.request_id)
    );
    let status = answer.status;
    let retry_helps = answer.should_retry.unwrap_or_else(|| {
        kind == "api_error"
            || code.is_some_and(|code| RETRYABLE_CODES.contains(&code))
            || status.is_server_error()
            || matches!(
                status,
                StatusCode::REQUEST_TIMEOUT | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS
            )
            || !(status.is_client_error() || status.is_redirection())
    });
    if retry_helps {
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
        Reply::Answered(Answer {
            status: StatusCode::from_u16(status).expect("status"),
            body: Some(body),
            request_id: Some("req_1".into()),
            should_retry: None,
        })
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
        let outcome = charge_outcome(Reply::Answered(Answer {
            status: StatusCode::PAYMENT_REQUIRED,
            body: None,
            request_id: None,
            should_retry: None,
        }));
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
        let outcome = charge_outcome(Reply::Answered(Answer {
            status: StatusCode::OK,
            body: None,
            request_id: None,
            should_retry: None,
        }));
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

    fn answered_with_retry_header(status: u16, body: Value, should_retry: bool) -> Reply {
        Reply::Answered(Answer {
            status: StatusCode::from_u16(status).expect("status"),
            body: Some(body),
            request_id: None,
            should_retry: Some(should_retry),
        })
    }

    #[test]
    fn stripes_error_types_map_onto_decline_retry_or_rejection() {
        let declined = charge_outcome(answered(
            402,
            json!({"error": {"type": "card_error", "code": "card_declined",
                             "decline_code": "insufficient_funds", "message": "no money"}}),
        ));
        assert_eq!(
            declined.expect("a card error is a decline"),
            ChargeOutcome::Declined {
                reason: "insufficient_funds".into()
            }
        );
        let authentication = charge_outcome(answered(
            402,
            stripe_error("card_error", "authentication_required", "3-D Secure"),
        ));
        assert_eq!(
            authentication.expect("an off-session card needing the customer is a decline"),
            ChargeOutcome::Declined {
                reason: "authentication_required".into()
            }
        );
        let retryable = [
            (500, stripe_error("api_error", "x", "Stripe had a problem")),
            (
                429,
                stripe_error("invalid_request_error", "rate_limit", "slow down"),
            ),
            (
                400,
                stripe_error("invalid_request_error", "lock_timeout", "busy object"),
            ),
            (
                409,
                stripe_error(
                    "idempotency_error",
                    "x",
                    "a request with this key is running",
                ),
            ),
        ];
        for (status, body) in retryable {
            let outcome = charge_outcome(answered(status, body.clone()));
            assert!(
                matches!(outcome, Err(ProviderError::Unavailable(_))),
                "{status} {body}: {outcome:?}"
            );
        }
        let rejected = [
            (
                400,
                stripe_error("idempotency_error", "x", "different parameters"),
            ),
            (
                400,
                stripe_error("invalid_request_error", "parameter_missing", "amount"),
            ),
            (
                401,
                stripe_error("invalid_request_error", "x", "Invalid API Key"),
            ),
            (
                403,
                stripe_error("invalid_request_error", "x", "restricted key"),
            ),
            (
                404,
                stripe_error("invalid_request_error", "resource_missing", "no such"),
            ),
        ];
        for (status, body) in rejected {
            let outcome = charge_outcome(answered(status, body.clone()));
            assert!(
                matches!(outcome, Err(ProviderError::Rejected(_))),
                "{status} {body}: {outcome:?}"
            );
        }
    }

    #[test]
    fn stripe_should_retry_decides_before_type_and_status_but_not_for_declines() {
        let outcome = charge_outcome(answered_with_retry_header(
            400,
            stripe_error("invalid_request_error", "x", "try again"),
            true,
        ));
        assert!(
            matches!(outcome, Err(ProviderError::Unavailable(_))),
            "{outcome:?}"
        );
        let outcome = refund_outcome(answered_with_retry_header(
            500,
            stripe_error("api_error", "x", "already handled"),
            false,
        ));
        assert!(
            matches!(outcome, Err(ProviderError::Rejected(_))),
            "{outcome:?}"
        );
        let outcome = charge_outcome(answered_with_retry_header(
            402,
            stripe_error("card_error", "card_declined", "no"),
            true,
        ));
        assert!(
            matches!(outcome, Ok(ChargeOutcome::Declined { .. })),
            "{outcome:?}"
        );
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
        assert_eq!(settings.kind, ProviderKind::Simulator);
        assert_eq!(settings.base_url, "http://127.0.0.1:8089");
        assert_eq!(settings.api_key, "sk_test_bazaar");
        assert_eq!(settings.timeout_ms, 3_000);
        assert!(!format!("{settings:?}").contains("sk_test_bazaar"));
        let provider = HttpPaymentProvider::new(&settings);
        assert!(!format!("{provider:?}").contains("sk_test_bazaar"));
    }
}
