//! The adapter for Stripe's real API (`provider.kind = "stripe"`).
//!
//! A charge is one `POST /v1/payment_intents` that creates the PaymentIntent and confirms it
//! (`confirm=true`) under the caller's `Idempotency-Key`: a retry after a lost answer gets
//! Stripe's stored answer, the same intent, instead of a second charge. `off_session=true`
//! because the customer is no longer at the checkout when the payment worker charges: a card
//! that would need the customer's authentication (3-D Secure) is declined with
//! `authentication_required` instead of waiting for an action nobody can take. A refund is one
//! `POST /v1/refunds` for the payment intent, under its own key.
//!
//! Stripe takes form-encoded bodies (`application/x-www-form-urlencoded`, nested keys in
//! brackets) and answers JSON; the requests carry a pinned `Stripe-Version`, so an account's
//! default API version changing in Stripe's dashboard does not change what the adapter reads.
//! Answers are read as the simulator's are (`super::charge_outcome`): Stripe's `card_error` is
//! a decline, `Stripe-Should-Retry`, `api_error`, rate limits and 5xx are worth a retry, and any
//! other error is a rejection.

use std::fmt;

use anyhow::Context;

use super::{
    Api, Body, ChargeOutcome, ChargeRequest, PaymentProvider, ProviderError, ProviderSettings,
    Refund, RefundRequest,
};

/// Where Stripe is and how to speak to it.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct StripeSettings {
    /// Stripe's API without the `/v1`: `https://api.stripe.com`, or stripe-mock in tests.
    pub base_url: String,
    /// The secret key (`sk_test_…` or `sk_live_…`), or a restricted key (`rk_…`) allowed to
    /// write PaymentIntents and Refunds. Required.
    pub api_key: String,
    /// Sent as `Stripe-Version` with every request: the API version the adapter was written
    /// and tested against (stripe-mock's).
    pub api_version: String,
}

impl Default for StripeSettings {
    fn default() -> Self {
        Self {
            base_url: "https://api.stripe.com".into(),
            api_key: String::new(),
            api_version: "2026-08-26.dahlia".into(),
        }
    }
}

// By hand, so that logging the service's configuration never prints the secret key.
impl fmt::Debug for StripeSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeSettings")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("api_version", &self.api_version)
            .finish()
    }
}

/// A [`PaymentProvider`] over Stripe's real API.
#[derive(Clone)]
pub struct StripeProvider {
    api: Api,
    /// A test-mode key: Stripe's test card tokens are translated (see [`payment_method`]).
    test_mode: bool,
}

impl fmt::Debug for StripeProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeProvider")
            .field("base_url", &self.api.base_url)
            .field("test_mode", &self.test_mode)
            .finish_non_exhaustive()
    }
}

impl StripeProvider {
    /// Uses `settings.stripe`, and the timeouts of `settings`.
    pub fn new(settings: &ProviderSettings) -> anyhow::Result<Self> {
        let stripe = &settings.stripe;
        anyhow::ensure!(
            !stripe.api_key.trim().is_empty(),
            "provider.stripe.api_key is empty: Stripe needs a secret key (BAZAAR__PROVIDER__STRIPE__API_KEY)"
        );
        let base = reqwest::Url::parse(&stripe.base_url)
            .with_context(|| format!("provider.stripe.base_url {:?}", stripe.base_url))?;
        // This workspace builds reqwest without a TLS stack (every hop inside a deployment is
        // plain HTTP): Stripe itself is reached through an egress proxy that adds TLS.
        anyhow::ensure!(
            base.scheme() == "http",
            "provider.stripe.base_url {:?}: this build speaks plain HTTP only; point it at an \
             egress proxy that forwards to https://api.stripe.com (or at stripe-mock)",
            stripe.base_url
        );
        Ok(Self {
            api: Api::new(
                settings,
                &stripe.base_url,
                stripe.api_key.trim(),
                Some(&stripe.api_version),
            ),
            test_mode: is_test_key(&stripe.api_key),
        })
    }
}

impl PaymentProvider for StripeProvider {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderError> {
        let body = charge_form(request, self.test_mode);
        self.api
            .create_payment_intent(request, Body::Form(body))
            .await
    }

    async fn refund(&self, request: &RefundRequest) -> Result<Refund, ProviderError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("payment_intent", &request.payment_id)
            .append_pair("amount", &request.amount_minor.to_string())
            .finish();
        self.api.create_refund(request, Body::Form(body)).await
    }
}

fn is_test_key(key: &str) -> bool {
    let key = key.trim();
    key.starts_with("sk_test_") || key.starts_with("rk_test_")
}

/// The PaymentIntent a charge creates and confirms, form-encoded. The same request gives the
/// same bytes, as a retry under the same key must.
fn charge_form(request: &ChargeRequest, test_mode: bool) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("amount", &request.amount_minor.to_string())
        // Stripe documents currencies in lowercase.
        .append_pair("currency", &request.currency.to_ascii_lowercase())
        .append_pair(
            "payment_method",
            &payment_method(&request.payment_token, test_mode),
        )
        .append_pair("payment_method_types[]", "card")
        .append_pair("confirm", "true")
        .append_pair("off_session", "true");
    if !request.description.is_empty() {
        form.append_pair("description", &request.description);
    }
    form.finish()
}

/// The PaymentMethod to charge. A storefront using Stripe.js sends one (`pm_…`). Bazaar's test
/// checkout sends Stripe's test card tokens (`tok_visa`, `tok_chargeDeclined`, …), which the
/// Charges API took but a PaymentIntent does not: in test mode each becomes Stripe's test
/// PaymentMethod of the same card (`pm_card_visa`, `pm_card_chargeDeclined`, …). Live mode
/// sends the token as it is, and Stripe refuses it.
fn payment_method(token: &str, test_mode: bool) -> String {
    match token.strip_prefix("tok_") {
        Some(card) if test_mode => format!("pm_card_{card}"),
        _ => token.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(token: &str, description: &str) -> ChargeRequest {
        ChargeRequest {
            idempotency_key: "order-1".into(),
            amount_minor: 3998,
            currency: "EUR".into(),
            payment_token: token.into(),
            description: description.into(),
        }
    }

    fn settings(api_key: &str, base_url: &str) -> ProviderSettings {
        ProviderSettings {
            stripe: StripeSettings {
                base_url: base_url.into(),
                api_key: api_key.into(),
                ..StripeSettings::default()
            },
            ..ProviderSettings::default()
        }
    }

    #[test]
    fn a_charge_creates_and_confirms_an_off_session_card_intent() {
        assert_eq!(
            charge_form(&request("pm_card_visa", "Bazaar order #1 & more"), true),
            "amount=3998&currency=eur&payment_method=pm_card_visa&payment_method_types%5B%5D=card\
             &confirm=true&off_session=true&description=Bazaar+order+%231+%26+more"
        );
        assert!(
            !charge_form(&request("pm_1", ""), false).contains("description"),
            "no empty description"
        );
    }

    #[test]
    fn test_card_tokens_become_test_payment_methods_in_test_mode_only() {
        assert_eq!(payment_method("tok_visa", true), "pm_card_visa");
        assert_eq!(
            payment_method("tok_chargeDeclinedInsufficientFunds", true),
            "pm_card_chargeDeclinedInsufficientFunds"
        );
        assert_eq!(payment_method("pm_1Abc", true), "pm_1Abc");
        assert_eq!(payment_method("tok_visa", false), "tok_visa");
        assert!(is_test_key("sk_test_123") && is_test_key(" rk_test_1"));
        assert!(!is_test_key("sk_live_123"));
    }

    #[test]
    fn it_needs_a_key_and_a_plain_http_address() {
        let error = StripeProvider::new(&settings("", "http://127.0.0.1:12111"))
            .expect_err("no key")
            .to_string();
        assert!(error.contains("api_key is empty"), "{error}");
        let error = StripeProvider::new(&settings("sk_test_1", "https://api.stripe.com"))
            .expect_err("no TLS")
            .to_string();
        assert!(error.contains("egress proxy"), "{error}");
        let provider = StripeProvider::new(&settings("sk_test_secret", "http://127.0.0.1:1"))
            .expect("valid settings");
        assert!(provider.test_mode);
        assert!(!format!("{provider:?}").contains("sk_test_secret"));
        assert!(!format!("{:?}", settings("sk_test_secret", "x")).contains("sk_test_secret"));
    }
}
