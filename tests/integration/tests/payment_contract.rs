//! The payment provider contract, one suite run against both providers the payment service can
//! be configured with (`provider.kind`):
//!
//! - `simulator`: the simulator's client against the payment gateway simulator, in-process on a
//!   free port;
//! - `stripe`: the Stripe adapter against stripe-mock, Stripe's own mock of its API, which
//!   `scripts/test.sh` starts (`scripts/stripe-mock.sh`). stripe-mock validates every request
//!   against Stripe's OpenAPI specification (a parameter Stripe does not know, a JSON body, a
//!   missing key is a 400 or 401) and answers with Stripe's own objects.
//!
//! stripe-mock keeps no state and never declines, so the cases that need a processor with a
//! memory (an idempotent replay) or a refusing card run against the simulator alone; how
//! Stripe's declines and errors map onto decline, retry and rejection is unit-tested with
//! Stripe's error bodies in `services/payment/src/provider.rs`. The simulator's faults are
//! tested in `payment_gateway.rs`.

use std::time::Duration;

use payment_service::provider::{
    ChargeOutcome, ChargeRequest, ConfiguredProvider, PaymentProvider, ProviderError, ProviderKind,
    ProviderSettings, RefundRequest, StripeSettings,
};
use uuid::Uuid;

/// A processor to hold the contract against, and the settings that reach it.
struct Backend {
    settings: ProviderSettings,
    /// The in-process simulator, stopped at the end.
    simulator: Option<(
        actix_web::dev::ServerHandle,
        tokio::task::JoinHandle<std::io::Result<()>>,
    )>,
}

impl Backend {
    async fn simulator() -> Self {
        let mut config = payment_gateway::config::Config::defaults();
        config.http.port = 0;
        let gateway = payment_gateway::startup::build(config).expect("simulator starts");
        let settings = ProviderSettings {
            kind: ProviderKind::Simulator,
            base_url: format!("http://127.0.0.1:{}", gateway.port),
            api_key: "sk_test_contract".into(),
            ..ProviderSettings::default()
        };
        Self {
            settings,
            simulator: Some((gateway.server.handle(), tokio::spawn(gateway.server))),
        }
    }

    /// stripe-mock as `scripts/test.sh` starts it, named in `BAZAAR_STRIPE_MOCK_URL` (a plain
    /// `cargo test` looks at its default port).
    async fn stripe_mock() -> Self {
        let url = std::env::var("BAZAAR_STRIPE_MOCK_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:12111".into());
        let answer = reqwest::Client::new()
            .get(format!("{url}/v1/balance"))
            .bearer_auth("sk_test_contract")
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        assert!(
            answer.is_ok_and(|answer| answer.status().is_success()),
            "stripe-mock does not answer at {url}: start it with 'scripts/stripe-mock.sh start' \
             (scripts/test.sh does), or set BAZAAR_STRIPE_MOCK_URL"
        );
        let settings = ProviderSettings {
            kind: ProviderKind::Stripe,
            stripe: StripeSettings {
                base_url: url,
                api_key: "sk_test_contract".into(),
                ..StripeSettings::default()
            },
            ..ProviderSettings::default()
        };
        Self {
            settings,
            simulator: None,
        }
    }

    fn provider(&self) -> ConfiguredProvider {
        ConfiguredProvider::new(&self.settings).expect("valid provider settings")
    }

    /// The same processor, reached with another secret key.
    fn provider_with_key(&self, key: &str) -> ConfiguredProvider {
        let mut settings = self.settings.clone();
        match settings.kind {
            ProviderKind::Simulator => settings.api_key = key.into(),
            ProviderKind::Stripe => settings.stripe.api_key = key.into(),
        }
        ConfiguredProvider::new(&settings).expect("valid provider settings")
    }

    /// The same provider, pointed at a port where nothing listens.
    fn provider_of_nothing(&self) -> ConfiguredProvider {
        let mut settings = self.settings.clone();
        settings.base_url = "http://127.0.0.1:1".into();
        settings.stripe.base_url = "http://127.0.0.1:1".into();
        ConfiguredProvider::new(&settings).expect("valid provider settings")
    }

    async fn stop(self) {
        if let Some((handle, task)) = self.simulator {
            handle.stop(true).await;
            let _ = task.await;
        }
    }
}

fn charge(amount_minor: i64, token: &str) -> ChargeRequest {
    let key = Uuid::now_v7().to_string();
    ChargeRequest {
        description: format!("Bazaar order {key}"),
        idempotency_key: key,
        amount_minor,
        currency: "EUR".into(),
        payment_token: token.into(),
    }
}

fn payment_id(outcome: Result<ChargeOutcome, ProviderError>) -> String {
    match outcome {
        Ok(ChargeOutcome::Succeeded { payment_id }) => payment_id,
        other => panic!("expected a successful charge, got {other:?}"),
    }
}

async fn a_test_card_is_charged_with_one_payment_intent(backend: Backend) {
    let provider = backend.provider();
    let id = payment_id(provider.charge(&charge(3998, "tok_visa")).await);
    assert!(id.starts_with("pi_"), "{id}");
    backend.stop().await;
}

async fn a_payment_is_refunded_in_full_and_in_part(backend: Backend) {
    let provider = backend.provider();
    for (amount, refunded) in [(3998, 3998), (2500, 1000)] {
        let payment_id = payment_id(provider.charge(&charge(amount, "tok_visa")).await);
        let refund = provider
            .refund(&RefundRequest {
                idempotency_key: format!("refund-{}", Uuid::now_v7()),
                payment_id,
                amount_minor: refunded,
            })
            .await
            .expect("refunded");
        assert!(refund.refund_id.starts_with("re_"), "{refund:?}");
    }
    backend.stop().await;
}

async fn a_refused_key_is_a_rejection_that_does_not_quote_it(backend: Backend) {
    // A live key: neither the simulator nor stripe-mock takes one.
    let provider = backend.provider_with_key("sk_live_123456789");
    let outcome = provider.charge(&charge(1000, "tok_visa")).await;
    let Err(ProviderError::Rejected(message)) = outcome else {
        panic!("expected a rejection, got {outcome:?}");
    };
    assert!(message.starts_with("HTTP 401"), "{message}");
    assert!(
        !message.contains("123456789"),
        "the key is quoted: {message}"
    );
    backend.stop().await;
}

async fn an_unreachable_processor_is_unavailable(backend: Backend) {
    let outcome = backend
        .provider_of_nothing()
        .charge(&charge(1000, "tok_visa"))
        .await;
    assert!(
        matches!(&outcome, Err(ProviderError::Unavailable(message)) if message.contains("connect")),
        "{outcome:?}"
    );
    backend.stop().await;
}

async fn refused_cards_are_declines_with_the_issuers_reason(backend: Backend) {
    let provider = backend.provider();
    for (token, reason) in [
        ("tok_chargeDeclined", "card_declined"),
        ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ] {
        let outcome = provider
            .charge(&charge(1000, token))
            .await
            .expect("a decline is an outcome");
        assert_eq!(
            outcome,
            ChargeOutcome::Declined {
                reason: reason.into()
            },
            "{token}"
        );
    }
    backend.stop().await;
}

async fn a_retry_under_the_same_key_is_the_same_payment(backend: Backend) {
    let provider = backend.provider();
    let request = charge(2599, "tok_visa");
    let first = payment_id(provider.charge(&request).await);
    let again = payment_id(provider.charge(&request).await);
    assert_eq!(first, again);
    let other = payment_id(provider.charge(&charge(2599, "tok_visa")).await);
    assert_ne!(first, other, "another key is another payment");
    backend.stop().await;
}

/// One test per case and backend: `simulator::<case>` and `stripe::<case>`.
macro_rules! contract {
    (both: $($case:ident),* ; simulator only: $($stateful:ident),* $(,)?) => {
        mod simulator {
            $(#[tokio::test] async fn $case() { super::$case(super::Backend::simulator().await).await; })*
            $(#[tokio::test] async fn $stateful() { super::$stateful(super::Backend::simulator().await).await; })*
        }
        mod stripe {
            $(#[tokio::test] async fn $case() { super::$case(super::Backend::stripe_mock().await).await; })*
        }
    };
}

contract!(
    both:
        a_test_card_is_charged_with_one_payment_intent,
        a_payment_is_refunded_in_full_and_in_part,
        a_refused_key_is_a_rejection_that_does_not_quote_it,
        an_unreachable_processor_is_unavailable;
    simulator only:
        refused_cards_are_declines_with_the_issuers_reason,
        a_retry_under_the_same_key_is_the_same_payment,
);
