//! The card processor's rules, free of HTTP, clocks and storage: what a test card does, which
//! request parameters are acceptable, when a retried request replays a stored answer, and how
//! much of a payment can still be refunded.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Stripe caps amounts at eight digits of minor units.
pub const MAX_AMOUNT: i64 = 99_999_999;
/// Stripe's limit on the `Idempotency-Key` header.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
const MAX_DESCRIPTION_LEN: usize = 1_000;
const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_KEY_LEN: usize = 40;
const MAX_METADATA_VALUE_LEN: usize = 500;

/// Why the card network refused a charge, in Stripe's vocabulary: `code` is the error code,
/// `decline_code` the issuer's finer reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decline {
    pub code: &'static str,
    pub decline_code: &'static str,
    pub message: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardOutcome {
    Approved,
    Declined(Decline),
}

const GENERIC_DECLINE: Decline = Decline {
    code: "card_declined",
    decline_code: "generic_decline",
    message: "Your card was declined.",
};
const INSUFFICIENT_FUNDS: Decline = Decline {
    code: "card_declined",
    decline_code: "insufficient_funds",
    message: "Your card has insufficient funds.",
};
const EXPIRED_CARD: Decline = Decline {
    code: "expired_card",
    decline_code: "expired_card",
    message: "Your card has expired.",
};

/// What charging a test payment method does; `None` for a token the simulator does not know.
///
/// Both Stripe spellings are accepted (`tok_*` card tokens and `pm_card_*` payment methods), so
/// the same storefront tokens work against a real Stripe test account.
pub fn card_outcome(token: &str) -> Option<CardOutcome> {
    let name = token
        .strip_prefix("tok_")
        .or_else(|| token.strip_prefix("pm_card_"))?;
    match name {
        "visa" | "mastercard" | "amex" => Some(CardOutcome::Approved),
        "chargeDeclined" => Some(CardOutcome::Declined(GENERIC_DECLINE)),
        "chargeDeclinedInsufficientFunds" => Some(CardOutcome::Declined(INSUFFICIENT_FUNDS)),
        "chargeDeclinedExpiredCard" => Some(CardOutcome::Declined(EXPIRED_CARD)),
        _ => None,
    }
}

/// A request the simulator refuses before doing anything: Stripe's `invalid_request_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRequest {
    pub code: &'static str,
    pub param: Option<&'static str>,
    pub message: String,
}

impl InvalidRequest {
    fn param(param: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            param: Some(param),
            message: message.into(),
        }
    }

    fn missing(param: &'static str) -> Self {
        Self::param(
            param,
            "parameter_missing",
            format!("Missing required param: {param}."),
        )
    }

    fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self::param(param, "parameter_invalid", message)
    }
}

/// Validated parameters of `POST /v1/payment_intents`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeParams {
    pub amount: i64,
    /// Lowercase, as Stripe answers it.
    pub currency: String,
    pub payment_method: String,
    pub outcome: CardOutcome,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// Validated parameters of `POST /v1/refunds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundParams {
    pub payment_intent: String,
    /// `None` refunds whatever remains.
    pub amount: Option<i64>,
    pub reason: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

const CHARGE_PARAMS: &[&str] = &[
    "amount",
    "currency",
    "payment_method",
    "confirm",
    "description",
    "metadata",
];
const REFUND_PARAMS: &[&str] = &["payment_intent", "amount", "reason", "metadata"];
const REFUND_REASONS: &[&str] = &["duplicate", "fraudulent", "requested_by_customer"];

pub fn parse_charge(body: &Value) -> Result<ChargeParams, InvalidRequest> {
    let fields = object_with_known_keys(body, CHARGE_PARAMS)?;
    let amount = amount(fields, "amount")?.ok_or_else(|| InvalidRequest::missing("amount"))?;
    let currency = currency(fields)?;
    // Only one-step payments exist here: a PaymentIntent left unconfirmed would need a second
    // call that the simulator does not offer.
    match fields.get("confirm") {
        Some(Value::Bool(true)) => {}
        None => return Err(InvalidRequest::missing("confirm")),
        Some(_) => {
            return Err(InvalidRequest::invalid(
                "confirm",
                "This simulator only supports confirm=true (create and confirm in one request).",
            ));
        }
    }
    let payment_method = string(fields, "payment_method")?
        .ok_or_else(|| InvalidRequest::missing("payment_method"))?;
    let outcome = card_outcome(&payment_method).ok_or_else(|| {
        InvalidRequest::param(
            "payment_method",
            "resource_missing",
            format!("No such PaymentMethod: '{payment_method}'"),
        )
    })?;
    let description = string(fields, "description")?;
    if description
        .as_ref()
        .is_some_and(|text| text.chars().count() > MAX_DESCRIPTION_LEN)
    {
        return Err(InvalidRequest::invalid(
            "description",
            format!("description must be at most {MAX_DESCRIPTION_LEN} characters."),
        ));
    }
    Ok(ChargeParams {
        amount,
        currency,
        payment_method,
        outcome,
        description,
        metadata: metadata(fields)?,
    })
}

pub fn parse_refund(body: &Value) -> Result<RefundParams, InvalidRequest> {
    let fields = object_with_known_keys(body, REFUND_PARAMS)?;
    let payment_intent = string(fields, "payment_intent")?
        .ok_or_else(|| InvalidRequest::missing("payment_intent"))?;
    let reason = string(fields, "reason")?;
    if let Some(reason) = &reason
        && !REFUND_REASONS.contains(&reason.as_str())
    {
        return Err(InvalidRequest::invalid(
            "reason",
            format!(
                "Invalid reason: must be one of {}",
                REFUND_REASONS.join(", ")
            ),
        ));
    }
    Ok(RefundParams {
        payment_intent,
        amount: amount(fields, "amount")?,
        reason,
        metadata: metadata(fields)?,
    })
}

fn object_with_known_keys<'a>(
    body: &'a Value,
    known: &[&str],
) -> Result<&'a Map<String, Value>, InvalidRequest> {
    let Value::Object(fields) = body else {
        return Err(InvalidRequest {
            code: "parameter_invalid",
            param: None,
            message: "The request body must be a JSON object.".into(),
        });
    };
    // Rejecting unknown parameters, as Stripe does, turns a client's typo into an error
    // instead of a silently ignored setting.
    if let Some(unknown) = fields.keys().find(|key| !known.contains(&key.as_str())) {
        return Err(InvalidRequest {
            code: "parameter_unknown",
            param: None,
            message: format!("Received unknown parameter: {unknown}"),
        });
    }
    Ok(fields)
}

fn amount(fields: &Map<String, Value>, param: &'static str) -> Result<Option<i64>, InvalidRequest> {
    let Some(value) = fields.get(param) else {
        return Ok(None);
    };
    match value.as_i64() {
        Some(amount) if (1..=MAX_AMOUNT).contains(&amount) => Ok(Some(amount)),
        Some(_) => Err(InvalidRequest::invalid(
            param,
            format!("{param} must be between 1 and {MAX_AMOUNT} (minor units)."),
        )),
        None => Err(InvalidRequest::invalid(
            param,
            format!("Invalid integer: {value}. {param} is in minor units, e.g. 1099 for 10.99."),
        )),
    }
}

fn currency(fields: &Map<String, Value>) -> Result<String, InvalidRequest> {
    let code = string(fields, "currency")?.ok_or_else(|| InvalidRequest::missing("currency"))?;
    if code.len() == 3 && code.chars().all(|c| c.is_ascii_alphabetic()) {
        Ok(code.to_ascii_lowercase())
    } else {
        Err(InvalidRequest::invalid(
            "currency",
            format!("Invalid currency: {code}. Expected a three-letter ISO 4217 code."),
        ))
    }
}

fn string(
    fields: &Map<String, Value>,
    param: &'static str,
) -> Result<Option<String>, InvalidRequest> {
    match fields.get(param) {
        // As in Stripe's API, an empty string means the parameter is not set.
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(InvalidRequest::invalid(
            param,
            format!("{param} must be a string."),
        )),
    }
}

fn metadata(fields: &Map<String, Value>) -> Result<BTreeMap<String, String>, InvalidRequest> {
    let invalid = |message: String| InvalidRequest::invalid("metadata", message);
    match fields.get("metadata") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(entries)) => {
            if entries.len() > MAX_METADATA_KEYS {
                return Err(invalid(format!(
                    "metadata may have at most {MAX_METADATA_KEYS} keys."
                )));
            }
            entries
                .iter()
                .map(|(key, value)| match value {
                    Value::String(text)
                        if key.chars().count() <= MAX_METADATA_KEY_LEN
                            && text.chars().count() <= MAX_METADATA_VALUE_LEN =>
                    {
                        Ok((key.clone(), text.clone()))
                    }
                    Value::String(_) => Err(invalid(format!(
                        "metadata keys are at most {MAX_METADATA_KEY_LEN} characters and values \
                         at most {MAX_METADATA_VALUE_LEN}."
                    ))),
                    _ => Err(invalid(format!("metadata[{key}] must be a string."))),
                })
                .collect()
        }
        Some(_) => Err(invalid("metadata must be an object of strings.".to_owned())),
    }
}

/// Checks the `Idempotency-Key` header. The simulator requires one on every POST: a charge
/// without it could not be retried safely, and that is the mistake this simulator exists to
/// catch.
pub fn idempotency_key(header: Option<&str>) -> Result<&str, InvalidRequest> {
    let invalid = |message: &str| InvalidRequest {
        code: "idempotency_key_invalid",
        param: None,
        message: message.to_owned(),
    };
    match header.map(str::trim) {
        None | Some("") => Err(invalid(
            "An Idempotency-Key header is required on every POST to this simulator.",
        )),
        Some(key) if key.len() > MAX_IDEMPOTENCY_KEY_LEN => Err(invalid(
            "Idempotency-Key must be at most 255 characters long.",
        )),
        Some(key) => Ok(key),
    }
}

/// What identifies a request for idempotency: where it went and exactly what it asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub endpoint: &'static str,
    pub params: Value,
}

/// What a new request with an already used key gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMatch {
    /// The key is new: process the request.
    Fresh,
    /// A retry of the stored request: answer what was answered then, and do nothing else.
    Replay,
    /// The key belongs to a different request: refuse (Stripe's `idempotency_error`).
    Conflict(String),
}

pub fn match_key(key: &str, stored: Option<&Fingerprint>, incoming: &Fingerprint) -> KeyMatch {
    match stored {
        None => KeyMatch::Fresh,
        Some(stored) if stored.endpoint != incoming.endpoint => KeyMatch::Conflict(format!(
            "Keys for idempotent requests can only be used for the same endpoint they were \
             first used for ({} vs {}). Try a key other than '{key}'.",
            stored.endpoint, incoming.endpoint
        )),
        // JSON object equality ignores key order, so only a real change in what was asked
        // counts as a different request.
        Some(stored) if stored.params != incoming.params => KeyMatch::Conflict(format!(
            "Keys for idempotent requests can only be used with the same parameters they were \
             first used with. Try a key other than '{key}' if you meant to execute a different \
             request."
        )),
        Some(_) => KeyMatch::Replay,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Succeeded,
    /// Stripe's status for a declined attempt: the intent waits for another card.
    RequiresPaymentMethod,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::RequiresPaymentMethod => "requires_payment_method",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundRejection {
    NotCaptured,
    AlreadyRefunded,
    AmountTooLarge { requested: i64, available: i64 },
}

impl RefundRejection {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotCaptured => "payment_intent_unexpected_state",
            Self::AlreadyRefunded => "charge_already_refunded",
            Self::AmountTooLarge { .. } => "amount_too_large",
        }
    }

    pub fn message(&self, payment_intent: &str) -> String {
        match self {
            Self::NotCaptured => {
                format!("PaymentIntent {payment_intent} has no successful charge to refund.")
            }
            Self::AlreadyRefunded => {
                format!("The charge of PaymentIntent {payment_intent} has already been refunded.")
            }
            Self::AmountTooLarge {
                requested,
                available,
            } => format!(
                "Refund amount ({requested}) is greater than the unrefunded amount of \
                 PaymentIntent {payment_intent} ({available})."
            ),
        }
    }
}

/// How much a refund returns: the requested amount, or all that remains when none was asked,
/// never more than was captured minus what earlier refunds returned.
pub fn refund_amount(
    status: PaymentStatus,
    captured: i64,
    already_refunded: i64,
    requested: Option<i64>,
) -> Result<i64, RefundRejection> {
    if status != PaymentStatus::Succeeded {
        return Err(RefundRejection::NotCaptured);
    }
    let available = captured - already_refunded;
    if available <= 0 {
        return Err(RefundRejection::AlreadyRefunded);
    }
    match requested {
        None => Ok(available),
        Some(requested) if requested > available => Err(RefundRejection::AmountTooLarge {
            requested,
            available,
        }),
        Some(requested) => Ok(requested),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn charge(body: Value) -> Result<ChargeParams, InvalidRequest> {
        parse_charge(&body)
    }

    fn visa(amount: Value) -> Value {
        json!({"amount": amount, "currency": "EUR", "payment_method": "tok_visa", "confirm": true})
    }

    #[test]
    fn tok_visa_is_approved() {
        assert_eq!(card_outcome("tok_visa"), Some(CardOutcome::Approved));
        assert_eq!(card_outcome("pm_card_visa"), Some(CardOutcome::Approved));
    }

    #[test]
    fn declining_tokens_carry_stripes_codes() {
        let Some(CardOutcome::Declined(generic)) = card_outcome("tok_chargeDeclined") else {
            panic!("tok_chargeDeclined must decline");
        };
        assert_eq!(
            (generic.code, generic.decline_code),
            ("card_declined", "generic_decline")
        );
        let Some(CardOutcome::Declined(funds)) =
            card_outcome("tok_chargeDeclinedInsufficientFunds")
        else {
            panic!("tok_chargeDeclinedInsufficientFunds must decline");
        };
        assert_eq!(
            (funds.code, funds.decline_code),
            ("card_declined", "insufficient_funds")
        );
        let Some(CardOutcome::Declined(expired)) = card_outcome("tok_chargeDeclinedExpiredCard")
        else {
            panic!("tok_chargeDeclinedExpiredCard must decline");
        };
        assert_eq!(expired.code, "expired_card");
    }

    #[test]
    fn unknown_tokens_have_no_outcome() {
        assert_eq!(card_outcome("tok_unknown"), None);
        assert_eq!(card_outcome("visa"), None);
        assert_eq!(card_outcome(""), None);
    }

    #[test]
    fn a_valid_charge_is_parsed_and_its_currency_lowercased() {
        let params = charge(json!({
            "amount": 1999, "currency": "EUR", "payment_method": "tok_visa", "confirm": true,
            "description": "order 42", "metadata": {"order_id": "42"}
        }))
        .expect("valid");
        assert_eq!(params.amount, 1999);
        assert_eq!(params.currency, "eur");
        assert_eq!(params.outcome, CardOutcome::Approved);
        assert_eq!(params.description.as_deref(), Some("order 42"));
        assert_eq!(
            params.metadata.get("order_id").map(String::as_str),
            Some("42")
        );
    }

    #[test]
    fn amounts_must_be_positive_integers_within_stripes_range() {
        for bad in [
            json!(0),
            json!(-5),
            json!(10.5),
            json!("1000"),
            json!(100_000_000),
        ] {
            let error = charge(visa(bad.clone())).expect_err("invalid amount");
            assert_eq!(error.param, Some("amount"), "{bad}");
        }
        assert_eq!(charge(visa(json!(1))).map(|p| p.amount), Ok(1));
        assert_eq!(
            charge(visa(json!(MAX_AMOUNT))).map(|p| p.amount),
            Ok(MAX_AMOUNT)
        );
    }

    #[test]
    fn currencies_must_be_three_letters() {
        for bad in ["EU", "EURO", "E1R", ""] {
            let error = charge(json!({
                "amount": 100, "currency": bad, "payment_method": "tok_visa", "confirm": true
            }))
            .expect_err("invalid currency");
            assert_eq!(error.param, Some("currency"), "{bad}");
        }
    }

    #[test]
    fn missing_parameters_are_named() {
        let error =
            charge(json!({"currency": "eur", "payment_method": "tok_visa", "confirm": true}))
                .expect_err("no amount");
        assert_eq!(
            (error.code, error.param),
            ("parameter_missing", Some("amount"))
        );
        let error = charge(json!({"amount": 100, "currency": "eur", "payment_method": "tok_visa"}))
            .expect_err("no confirm");
        assert_eq!(error.param, Some("confirm"));
    }

    #[test]
    fn only_confirmed_intents_are_supported() {
        let error = charge(json!({
            "amount": 100, "currency": "eur", "payment_method": "tok_visa", "confirm": false
        }))
        .expect_err("confirm=false");
        assert_eq!(error.param, Some("confirm"));
    }

    #[test]
    fn an_unknown_token_is_a_missing_resource() {
        let error = charge(json!({
            "amount": 100, "currency": "eur", "payment_method": "tok_nope", "confirm": true
        }))
        .expect_err("unknown token");
        assert_eq!(
            (error.code, error.param),
            ("resource_missing", Some("payment_method"))
        );
    }

    #[test]
    fn unknown_parameters_are_refused() {
        let mut body = visa(json!(100));
        body["ammount"] = json!(100);
        let error = charge(body).expect_err("typo");
        assert_eq!(error.code, "parameter_unknown");
        assert!(error.message.contains("ammount"), "{}", error.message);
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        assert!(charge(json!([1, 2])).is_err());
        assert!(parse_refund(&json!("pi_1")).is_err());
    }

    #[test]
    fn metadata_values_must_be_strings() {
        let mut body = visa(json!(100));
        body["metadata"] = json!({"order": 42});
        assert_eq!(charge(body).expect_err("number").param, Some("metadata"));
    }

    #[test]
    fn refunds_need_a_payment_intent_and_accept_an_optional_amount() {
        let params = parse_refund(&json!({"payment_intent": "pi_1"})).expect("valid");
        assert_eq!(params.amount, None);
        let params = parse_refund(&json!({"payment_intent": "pi_1", "amount": 50})).expect("valid");
        assert_eq!(params.amount, Some(50));
        let error = parse_refund(&json!({"amount": 50})).expect_err("no intent");
        assert_eq!(error.param, Some("payment_intent"));
        let error =
            parse_refund(&json!({"payment_intent": "pi_1", "amount": 0})).expect_err("zero amount");
        assert_eq!(error.param, Some("amount"));
        let error = parse_refund(&json!({"payment_intent": "pi_1", "reason": "bored"}))
            .expect_err("unknown reason");
        assert_eq!(error.param, Some("reason"));
    }

    #[test]
    fn idempotency_keys_are_required_and_bounded() {
        assert_eq!(idempotency_key(Some("order-1")), Ok("order-1"));
        assert!(idempotency_key(None).is_err());
        assert!(idempotency_key(Some("  ")).is_err());
        assert!(idempotency_key(Some(&"k".repeat(256))).is_err());
        assert!(idempotency_key(Some(&"k".repeat(255))).is_ok());
    }

    fn fingerprint(endpoint: &'static str, params: Value) -> Fingerprint {
        Fingerprint { endpoint, params }
    }

    #[test]
    fn a_new_key_is_fresh() {
        let incoming = fingerprint("POST /v1/payment_intents", json!({"amount": 1}));
        assert_eq!(match_key("k", None, &incoming), KeyMatch::Fresh);
    }

    #[test]
    fn the_same_request_with_the_same_key_replays() {
        let stored = fingerprint(
            "POST /v1/payment_intents",
            json!({"amount": 1, "currency": "eur"}),
        );
        // Field order is not a difference.
        let incoming = fingerprint(
            "POST /v1/payment_intents",
            json!({"currency": "eur", "amount": 1}),
        );
        assert_eq!(match_key("k", Some(&stored), &incoming), KeyMatch::Replay);
    }

    #[test]
    fn the_same_key_with_different_parameters_conflicts() {
        let stored = fingerprint("POST /v1/payment_intents", json!({"amount": 1}));
        let incoming = fingerprint("POST /v1/payment_intents", json!({"amount": 2}));
        let KeyMatch::Conflict(message) = match_key("k", Some(&stored), &incoming) else {
            panic!("a different amount must conflict");
        };
        assert!(message.contains("same parameters"), "{message}");
    }

    #[test]
    fn the_same_key_on_another_endpoint_conflicts() {
        let stored = fingerprint("POST /v1/payment_intents", json!({"amount": 1}));
        let incoming = fingerprint("POST /v1/refunds", json!({"amount": 1}));
        let KeyMatch::Conflict(message) = match_key("k", Some(&stored), &incoming) else {
            panic!("another endpoint must conflict");
        };
        assert!(message.contains("same endpoint"), "{message}");
    }

    #[test]
    fn a_refund_without_amount_returns_what_remains() {
        assert_eq!(
            refund_amount(PaymentStatus::Succeeded, 1000, 300, None),
            Ok(700)
        );
    }

    #[test]
    fn partial_refunds_add_up_to_the_captured_amount() {
        assert_eq!(
            refund_amount(PaymentStatus::Succeeded, 1000, 0, Some(400)),
            Ok(400)
        );
        assert_eq!(
            refund_amount(PaymentStatus::Succeeded, 1000, 400, Some(600)),
            Ok(600)
        );
        assert_eq!(
            refund_amount(PaymentStatus::Succeeded, 1000, 1000, Some(1)),
            Err(RefundRejection::AlreadyRefunded)
        );
    }

    #[test]
    fn a_refund_larger_than_what_remains_is_refused() {
        assert_eq!(
            refund_amount(PaymentStatus::Succeeded, 1000, 400, Some(601)),
            Err(RefundRejection::AmountTooLarge {
                requested: 601,
                available: 600
            })
        );
    }

    #[test]
    fn a_fully_refunded_payment_cannot_be_refunded_again() {
        assert_eq!(
            refund_amount(PaymentStatus::Succeeded, 1000, 1000, None),
            Err(RefundRejection::AlreadyRefunded)
        );
    }

    #[test]
    fn a_declined_payment_cannot_be_refunded() {
        assert_eq!(
            refund_amount(PaymentStatus::RequiresPaymentMethod, 1000, 0, None),
            Err(RefundRejection::NotCaptured)
        );
    }
}
