//! The payment service's provider client against the payment gateway simulator, in-process on a
//! free port: outcomes of the test cards, idempotent retries, refunds, and every injected fault
//! mapped to the error the payment service's retry policy relies on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::dev::Service as _;
use actix_web::web;
use bazaar_integration_tests::eventually;
use payment_service::provider::{
    ChargeOutcome, ChargeRequest, HttpPaymentProvider, PaymentProvider, ProviderError,
    ProviderSettings, Refund, RefundRequest,
};
use serde_json::{Value, json};

struct Simulator {
    base_url: String,
    http: reqwest::Client,
    stop: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Only from [`Simulator::start_counting_api_requests`].
    api_requests: Option<Arc<ApiRequests>>,
}

/// API requests (`/v1/...`) the simulator has begun handling, and how many of those have ended:
/// answered, or dropped with their connection. Either way an ended request can no longer touch
/// the ledger.
#[derive(Debug, Default)]
struct ApiRequests {
    begun: AtomicUsize,
    ended: AtomicUsize,
}

/// Counts its request as ended when dropped: after the answer, or with an abandoned handler.
struct Ending(Arc<ApiRequests>);

impl Drop for Ending {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::SeqCst);
    }
}

impl Simulator {
    /// The simulator in test mode, as `make test` runs it: with its `/_sim` controls.
    async fn start() -> Self {
        let mut config = payment_gateway::config::Config::defaults();
        config.test_mode = true;
        Self::start_with(config)
    }

    fn start_with(mut config: payment_gateway::config::Config) -> Self {
        config.http.port = 0;
        let gateway = payment_gateway::startup::build(config).expect("simulator starts");
        Self {
            base_url: format!("http://127.0.0.1:{}", gateway.port),
            http: reqwest::Client::new(),
            stop: gateway.server.handle(),
            task: tokio::spawn(gateway.server),
            api_requests: None,
        }
    }

    /// The simulator served as `payment_gateway::startup::build` serves it, its routes wrapped
    /// to count API requests, so a test can wait until none is in the simulator's hands.
    async fn start_counting_api_requests() -> Self {
        let config = payment_gateway::config::Config::defaults();
        let simulator = web::Data::new(payment_gateway::http::Simulator::new(config.faults));
        let requests = Arc::new(ApiRequests::default());
        let counted = requests.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let server = platform::http::serve(
            listener,
            config.http.keep_alive(),
            platform::http::Readiness::default(),
            move |service| {
                let simulator = simulator.clone();
                let counted = counted.clone();
                service.service(
                    web::scope("")
                        .wrap_fn(move |request, routes| {
                            let ending = request.path().starts_with("/v1/").then(|| {
                                counted.begun.fetch_add(1, Ordering::SeqCst);
                                Ending(counted.clone())
                            });
                            let answer = routes.call(request);
                            async move {
                                let answer = answer.await;
                                drop(ending);
                                answer
                            }
                        })
                        .configure(|routes| {
                            payment_gateway::http::routes(routes, simulator);
                            payment_gateway::http::test_routes(routes);
                        }),
                );
            },
        )
        .expect("simulator starts");
        Self {
            base_url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            stop: server.handle(),
            task: tokio::spawn(server),
            api_requests: Some(requests),
        }
    }

    /// Waits until the simulator has begun `count` API requests and ended every one it began;
    /// fails if it began more.
    async fn wait_until_api_requests_ended(&self, count: usize) {
        let requests = self
            .api_requests
            .as_ref()
            .expect("started with start_counting_api_requests");
        let begun = eventually(
            &format!("{count} API requests begun and ended"),
            Duration::from_secs(30),
            || async {
                let begun = requests.begun.load(Ordering::SeqCst);
                (begun >= count && requests.ended.load(Ordering::SeqCst) == begun).then_some(begun)
            },
        )
        .await;
        assert_eq!(begun, count, "API requests begun");
    }

    fn provider(&self, timeout_ms: u64) -> HttpPaymentProvider {
        HttpPaymentProvider::new(&ProviderSettings {
            base_url: self.base_url.clone(),
            api_key: "sk_test_integration".into(),
            timeout_ms,
            ..ProviderSettings::default()
        })
    }

    async fn set_faults(&self, faults: Value) {
        let answer = self
            .http
            .put(format!("{}/_sim/faults", self.base_url))
            .json(&faults)
            .send()
            .await
            .expect("PUT /_sim/faults");
        assert_eq!(answer.status(), 200, "faults {faults} accepted");
    }

    async fn charges(&self) -> Value {
        self.http
            .get(format!("{}/_sim/charges", self.base_url))
            .send()
            .await
            .expect("GET /_sim/charges")
            .json()
            .await
            .expect("charges JSON")
    }

    /// Succeeded charges made under `key`: the invariant is at most one per order.
    async fn succeeded_charges(&self, key: &str) -> Vec<Value> {
        self.charges().await["charges"]
            .as_array()
            .expect("charges list")
            .iter()
            .filter(|charge| charge["idempotency_key"] == key && charge["status"] == "succeeded")
            .cloned()
            .collect()
    }

    async fn stop(self) {
        self.stop.stop(true).await;
        self.task
            .await
            .expect("simulator task")
            .expect("simulator stopped cleanly");
    }
}

fn charge(key: &str, amount_minor: i64, token: &str) -> ChargeRequest {
    ChargeRequest {
        idempotency_key: key.into(),
        amount_minor,
        currency: "EUR".into(),
        payment_token: token.into(),
        description: format!("Bazaar order {key}"),
    }
}

fn payment_id(outcome: Result<ChargeOutcome, ProviderError>) -> String {
    match outcome {
        Ok(ChargeOutcome::Succeeded { payment_id }) => payment_id,
        other => panic!("expected a successful charge, got {other:?}"),
    }
}

fn unavailable(outcome: Result<impl std::fmt::Debug, ProviderError>) -> String {
    match outcome {
        Err(ProviderError::Unavailable(message)) => message,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn rejected(outcome: Result<impl std::fmt::Debug, ProviderError>) -> String {
    match outcome {
        Err(ProviderError::Rejected(message)) => message,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_visa_charge_succeeds_and_is_recorded() {
    let simulator = Simulator::start().await;
    let provider = simulator.provider(3_000);

    let id = payment_id(provider.charge(&charge("order-1", 4500, "tok_visa")).await);
    assert!(id.starts_with("pi_"), "{id}");

    let intent: Value = simulator
        .http
        .get(format!("{}/v1/payment_intents/{id}", simulator.base_url))
        .bearer_auth("sk_test_integration")
        .send()
        .await
        .expect("GET intent")
        .json()
        .await
        .expect("intent JSON");
    assert_eq!(intent["object"], "payment_intent");
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount"], 4500);
    assert_eq!(intent["currency"], "eur");
    assert_eq!(intent["description"], "Bazaar order order-1");

    let charges = simulator.succeeded_charges("order-1").await;
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0]["payment_intent"], id.as_str());
    assert_eq!(charges[0]["amount"], 4500);
    simulator.stop().await;
}

#[tokio::test]
async fn declining_cards_are_declines_with_their_reason() {
    let simulator = Simulator::start().await;
    let provider = simulator.provider(3_000);

    let generic = provider
        .charge(&charge("order-1", 1000, "tok_chargeDeclined"))
        .await
        .expect("a decline is an outcome");
    assert_eq!(
        generic,
        ChargeOutcome::Declined {
            reason: "card_declined".into()
        }
    );
    let funds = provider
        .charge(&charge(
            "order-2",
            1000,
            "tok_chargeDeclinedInsufficientFunds",
        ))
        .await
        .expect("a decline is an outcome");
    assert_eq!(
        funds,
        ChargeOutcome::Declined {
            reason: "insufficient_funds".into()
        }
    );

    let charges = simulator.charges().await;
    let statuses: Vec<(&str, &str)> = charges["charges"]
        .as_array()
        .expect("charges")
        .iter()
        .map(|charge| {
            (
                charge["status"].as_str().unwrap_or_default(),
                charge["failure_code"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("failed", "generic_decline"),
            ("failed", "insufficient_funds")
        ]
    );
    // A retried decline is the same decline, not a second attempt on the card.
    let again = provider
        .charge(&charge("order-1", 1000, "tok_chargeDeclined"))
        .await
        .expect("replayed decline");
    assert_eq!(
        again,
        ChargeOutcome::Declined {
            reason: "card_declined".into()
        }
    );
    assert_eq!(
        simulator.charges().await["charges"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    simulator.stop().await;
}

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_same_payment_and_charges_once() {
    let simulator = Simulator::start().await;
    let provider = simulator.provider(3_000);
    let request = charge("order-1", 2599, "tok_visa");

    let first = payment_id(provider.charge(&request).await);
    let second = payment_id(provider.charge(&request).await);
    assert_eq!(first, second);

    // Concurrent retries serialise on the key too.
    let provider = Arc::new(provider);
    let racing = (0..16).map(|_| {
        let provider = provider.clone();
        let request = charge("order-2", 1000, "tok_visa");
        tokio::spawn(async move { provider.charge(&request).await })
    });
    let ids: Vec<String> = futures::future::join_all(racing)
        .await
        .into_iter()
        .map(|joined| payment_id(joined.expect("task")))
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");

    assert_eq!(simulator.succeeded_charges("order-1").await.len(), 1);
    assert_eq!(simulator.succeeded_charges("order-2").await.len(), 1);
    assert_eq!(
        simulator.charges().await["charges"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // The simulator marks replays as Stripe does.
    let replay = simulator
        .http
        .post(format!("{}/v1/payment_intents", simulator.base_url))
        .bearer_auth("sk_test_integration")
        .header("Idempotency-Key", "order-1")
        .json(&json!({
            "amount": 2599, "currency": "eur", "payment_method": "tok_visa", "confirm": true,
            "description": "Bazaar order order-1"
        }))
        .send()
        .await
        .expect("raw replay");
    assert_eq!(replay.status(), 200);
    assert_eq!(
        replay
            .headers()
            .get("idempotent-replayed")
            .and_then(|value| value.to_str().ok()),
        Some("true")
    );
    let body: Value = replay.json().await.expect("body");
    assert_eq!(body["id"], first.as_str());
    simulator.stop().await;
}

#[tokio::test]
async fn the_same_key_with_a_different_amount_is_rejected() {
    let simulator = Simulator::start().await;
    let provider = simulator.provider(3_000);

    let id = payment_id(provider.charge(&charge("order-1", 1000, "tok_visa")).await);
    let message = rejected(provider.charge(&charge("order-1", 1001, "tok_visa")).await);
    assert!(message.contains("HTTP 400 idempotency_error"), "{message}");

    let charges = simulator.succeeded_charges("order-1").await;
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0]["amount"], 1000);
    assert_eq!(charges[0]["payment_intent"], id.as_str());
    simulator.stop().await;
}

#[tokio::test]
async fn a_refund_is_made_once_and_never_exceeds_the_charge() {
    let simulator = Simulator::start().await;
    let provider = simulator.provider(3_000);
    let id = payment_id(provider.charge(&charge("order-1", 3000, "tok_visa")).await);
    let full = RefundRequest {
        idempotency_key: "refund-order-1".into(),
        payment_id: id.clone(),
        amount_minor: 3000,
    };

    let Refund { refund_id } = provider.refund(&full).await.expect("refunded");
    assert!(refund_id.starts_with("re_"), "{refund_id}");
    // The retry of the same refund is the same refund.
    let again = provider.refund(&full).await.expect("replayed refund");
    assert_eq!(again.refund_id, refund_id);

    // Another refund of the same payment under a new key: nothing is left.
    let message = rejected(
        provider
            .refund(&RefundRequest {
                idempotency_key: "refund-order-1-bis".into(),
                ..full.clone()
            })
            .await,
    );
    assert!(message.contains("charge_already_refunded"), "{message}");

    let report = simulator.charges().await;
    assert_eq!(report["charges"][0]["amount_refunded"], 3000);
    let refunds = report["refunds"].as_array().expect("refunds");
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["id"], refund_id.as_str());
    assert_eq!(refunds[0]["amount"], 3000);
    assert_eq!(refunds[0]["payment_intent"], id.as_str());

    // Partial refunds add up to the charge and no further.
    let id = payment_id(provider.charge(&charge("order-2", 1000, "tok_visa")).await);
    let part = |key: &str, amount_minor| RefundRequest {
        idempotency_key: key.into(),
        payment_id: id.clone(),
        amount_minor,
    };
    provider
        .refund(&part("refund-a", 600))
        .await
        .expect("first part");
    let message = rejected(provider.refund(&part("refund-b", 401)).await);
    assert!(message.contains("amount_too_large"), "{message}");
    provider
        .refund(&part("refund-c", 400))
        .await
        .expect("the rest");

    // A charge key is not a refund key: reusing one is a different request.
    let message = rejected(provider.refund(&part("order-2", 1)).await);
    assert!(message.contains("idempotency_error"), "{message}");

    // Refunding a payment that does not exist.
    let message = rejected(
        provider
            .refund(&RefundRequest {
                idempotency_key: "refund-x".into(),
                payment_id: "pi_missing".into(),
                amount_minor: 1,
            })
            .await,
    );
    assert!(message.contains("resource_missing"), "{message}");
    let report = simulator.charges().await;
    assert_eq!(report["charges"][1]["amount_refunded"], 1000);
    assert_eq!(report["refunds"].as_array().map(Vec::len), Some(3));
    simulator.stop().await;
}

#[tokio::test]
async fn an_injected_500_is_unavailable_and_charges_nothing() {
    let simulator = Simulator::start().await;
    let provider = simulator.provider(3_000);
    simulator.set_faults(json!({"failure_rate": 1.0})).await;

    let message = unavailable(provider.charge(&charge("order-1", 1000, "tok_visa")).await);
    assert!(message.contains("HTTP 500 api_error"), "{message}");
    assert_eq!(
        simulator.charges().await["charges"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );

    simulator.set_faults(json!({})).await;
    payment_id(provider.charge(&charge("order-1", 1000, "tok_visa")).await);
    assert_eq!(simulator.succeeded_charges("order-1").await.len(), 1);
    simulator.stop().await;
}

#[tokio::test]
async fn latency_beyond_the_client_timeout_is_unavailable() {
    let simulator = Simulator::start_counting_api_requests().await;
    let provider = simulator.provider(300);
    simulator.set_faults(json!({"latency_ms": 1500})).await;

    let started = Instant::now();
    let message = unavailable(provider.charge(&charge("order-1", 1000, "tok_visa")).await);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1200),
        "the client gives up at its own timeout, waited {waited:?}"
    );
    assert!(message.to_lowercase().contains("timed out"), "{message}");

    // The retry succeeds; whenever the slow first attempt lands, it is the same charge.
    simulator.set_faults(json!({})).await;
    let id = payment_id(provider.charge(&charge("order-1", 1000, "tok_visa")).await);
    // Proof first: the slow attempt has left the simulator's hands, landed or abandoned.
    simulator.wait_until_api_requests_ended(2).await;
    let charges = simulator.succeeded_charges("order-1").await;
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(charges[0]["payment_intent"], id.as_str());
    simulator.stop().await;
}

#[tokio::test]
async fn a_timeout_after_the_charge_is_resolved_by_an_idempotent_retry() {
    let simulator = Simulator::start().await;
    let provider = simulator.provider(500);
    simulator
        .set_faults(json!({"timeout_after_charge_rate": 1.0, "timeout_hold_ms": 2000}))
        .await;

    unavailable(provider.charge(&charge("order-1", 7000, "tok_visa")).await);
    // The client heard nothing, yet the money moved.
    let charged = simulator.succeeded_charges("order-1").await;
    assert_eq!(charged.len(), 1);
    let original = charged[0]["payment_intent"]
        .as_str()
        .expect("intent id")
        .to_owned();

    simulator.set_faults(json!({})).await;
    let id = payment_id(provider.charge(&charge("order-1", 7000, "tok_visa")).await);
    assert_eq!(id, original);
    let charges = simulator.succeeded_charges("order-1").await;
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0]["amount"], 7000);
    simulator.stop().await;
}

#[tokio::test]
async fn injected_timeouts_answer_504_or_drop_the_connection_before_charging() {
    let simulator = Simulator::start().await;
    let provider = simulator.provider(3_000);

    simulator
        .set_faults(json!({"timeout_rate": 1.0, "timeout_hold_ms": 100}))
        .await;
    let started = Instant::now();
    let message = unavailable(provider.charge(&charge("order-1", 1000, "tok_visa")).await);
    assert!(message.contains("HTTP 504"), "{message}");
    assert!(started.elapsed() >= Duration::from_millis(100));

    simulator
        .set_faults(json!({"timeout_rate": 1.0, "timeout_hold_ms": 100, "timeout_mode": "drop"}))
        .await;
    let message = unavailable(provider.charge(&charge("order-1", 1000, "tok_visa")).await);
    assert!(
        message.contains("connection closed"),
        "no answer at all: {message}"
    );

    // A refund is held and lost the same way.
    let message = unavailable(
        provider
            .refund(&RefundRequest {
                idempotency_key: "refund-order-1".into(),
                payment_id: "pi_whatever".into(),
                amount_minor: 1,
            })
            .await,
    );
    assert!(!message.is_empty());

    assert_eq!(
        simulator.charges().await,
        json!({"charges": [], "refunds": []})
    );
    simulator.stop().await;
}

#[tokio::test]
async fn invalid_requests_and_credentials_are_rejected() {
    let simulator = Simulator::start().await;
    let provider = simulator.provider(3_000);

    let message = rejected(
        provider
            .charge(&charge("order-1", 1000, "tok_unknown"))
            .await,
    );
    assert!(
        message.contains("HTTP 400 invalid_request_error/resource_missing"),
        "{message}"
    );
    let message = rejected(provider.charge(&charge("order-2", 0, "tok_visa")).await);
    assert!(message.contains("parameter_invalid"), "{message}");
    let mut odd_currency = charge("order-3", 1000, "tok_visa");
    odd_currency.currency = "EURO".into();
    let message = rejected(provider.charge(&odd_currency).await);
    assert!(message.contains("currency"), "{message}");

    let live = HttpPaymentProvider::new(&ProviderSettings {
        base_url: simulator.base_url.clone(),
        api_key: "sk_live_123456789".into(),
        ..ProviderSettings::default()
    });
    let message = rejected(live.charge(&charge("order-4", 1000, "tok_visa")).await);
    assert!(message.contains("HTTP 401"), "{message}");
    assert!(
        !message.contains("123456789"),
        "the key is not echoed: {message}"
    );

    let without_key = simulator
        .http
        .post(format!("{}/v1/payment_intents", simulator.base_url))
        .bearer_auth("sk_test_integration")
        .json(&json!({"amount": 1000, "currency": "eur", "payment_method": "tok_visa", "confirm": true}))
        .send()
        .await
        .expect("POST without Idempotency-Key");
    assert_eq!(without_key.status(), 400);
    let body: Value = without_key.json().await.expect("error JSON");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "idempotency_key_invalid");

    // None of it charged anything.
    assert_eq!(
        simulator.charges().await["charges"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    simulator.stop().await;
}

#[tokio::test]
async fn an_unreachable_processor_is_unavailable() {
    let provider = HttpPaymentProvider::new(&ProviderSettings {
        // Nothing listens on port 1.
        base_url: "http://127.0.0.1:1".into(),
        ..ProviderSettings::default()
    });
    let message = unavailable(provider.charge(&charge("order-1", 1000, "tok_visa")).await);
    assert!(message.contains("connect"), "{message}");
}

#[tokio::test]
async fn fault_settings_are_validated_and_can_be_read_back() {
    let simulator = Simulator::start().await;
    let answer = simulator
        .http
        .put(format!("{}/_sim/faults", simulator.base_url))
        .json(&json!({"failure_rate": 1.5}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(answer.status(), 400);

    simulator
        .set_faults(json!({"latency_ms": 25, "failure_rate": 0.25, "timeout_mode": "drop"}))
        .await;
    let faults: Value = simulator
        .http
        .get(format!("{}/_sim/faults", simulator.base_url))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("faults JSON");
    assert_eq!(faults["latency_ms"], 25);
    assert_eq!(faults["failure_rate"], 0.25);
    assert_eq!(faults["timeout_rate"], 0.0);
    assert_eq!(faults["timeout_mode"], "drop");

    let ready = simulator
        .http
        .get(format!("{}/readyz", simulator.base_url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    simulator.stop().await;
}

#[tokio::test]
async fn outside_test_mode_the_sim_controls_do_not_exist() {
    let simulator = Simulator::start_with(payment_gateway::config::Config::defaults());
    for (method, path) in [
        (reqwest::Method::GET, "/_sim/faults"),
        (reqwest::Method::PUT, "/_sim/faults"),
        (reqwest::Method::GET, "/_sim/charges"),
    ] {
        let answer = simulator
            .http
            .request(method.clone(), format!("{}{path}", simulator.base_url))
            .json(&json!({"failure_rate": 1.0}))
            .send()
            .await
            .expect("an answer");
        assert_eq!(answer.status(), 404, "{method} {path}");
    }
    // The processor's API is served as ever.
    let intent = simulator
        .http
        .get(format!(
            "{}/v1/payment_intents/pi_unknown",
            simulator.base_url
        ))
        .send()
        .await
        .expect("an answer");
    let body: Value = intent.json().await.expect("Stripe's error shape");
    assert!(
        body["error"].is_object(),
        "the API under /v1 answers: {body}"
    );
    simulator.stop().await;
}
