//! The HTTP face of the simulator: Stripe's API under `/v1`, wrapped in fault injection, and
//! in test mode the simulator's own controls under `/_sim`.

use std::sync::{PoisonError, RwLock};

use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, HeaderName};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use platform::http::ApiError;
use serde_json::Value;
use uuid::Uuid;

use crate::domain;
use crate::faults::{BeforeEffect, Dice, FaultSettings, TimeoutMode};
use crate::ledger::Ledger;
use crate::wire::{Answer, ApiFailure};

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
const REQUEST_ID: &str = "request-id";
/// Stripe's test-mode secret keys start like this; any such key is accepted.
const TEST_KEY_PREFIX: &str = "sk_test_";

#[derive(Debug)]
pub struct Simulator {
    ledger: Ledger,
    faults: RwLock<FaultSettings>,
    dice: Dice,
}

impl Simulator {
    pub fn new(faults: FaultSettings) -> Self {
        Self {
            ledger: Ledger::default(),
            faults: RwLock::new(faults),
            dice: Dice::from_clock(),
        }
    }

    fn faults(&self) -> FaultSettings {
        *self.faults.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_faults(&self, faults: FaultSettings) {
        *self.faults.write().unwrap_or_else(PoisonError::into_inner) = faults;
    }
}

/// The processor's API under `/v1`.
pub fn routes(config: &mut web::ServiceConfig, simulator: web::Data<Simulator>) {
    config.app_data(simulator).service(
        web::scope("/v1")
            .route("/payment_intents", web::post().to(create_payment_intent))
            .route("/payment_intents/{id}", web::get().to(get_payment_intent))
            .route("/refunds", web::post().to(create_refund))
            .default_service(web::to(unrecognized_url)),
    );
}

/// The simulator's own controls, served in test mode only (`test_mode`): the faults injected,
/// and the ledger of every charge. Needs [`routes`] for the simulator they control.
pub fn test_routes(config: &mut web::ServiceConfig) {
    config
        .route("/_sim/faults", web::get().to(get_faults))
        .route("/_sim/faults", web::put().to(put_faults))
        .route("/_sim/charges", web::get().to(charges));
}

async fn create_payment_intent(
    simulator: web::Data<Simulator>,
    request: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    simulate(&simulator, &request, Effect::Writes, || {
        let key = domain::idempotency_key(header(&request, IDEMPOTENCY_KEY))?;
        Ok(simulator
            .ledger
            .create_payment_intent(key, json_body(&body)?))
    })
    .await
}

async fn create_refund(
    simulator: web::Data<Simulator>,
    request: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    simulate(&simulator, &request, Effect::Writes, || {
        let key = domain::idempotency_key(header(&request, IDEMPOTENCY_KEY))?;
        Ok(simulator.ledger.create_refund(key, json_body(&body)?))
    })
    .await
}

async fn get_payment_intent(
    simulator: web::Data<Simulator>,
    request: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    simulate(&simulator, &request, Effect::ReadsOnly, || {
        Ok(simulator.ledger.payment_intent(&id))
    })
    .await
}

async fn unrecognized_url(request: HttpRequest) -> HttpResponse {
    let failure = ApiFailure::new(
        404,
        "invalid_request_error",
        format!(
            "Unrecognized request URL ({} {}).",
            request.method(),
            request.path()
        ),
    );
    respond(&request, failure.into_answer())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Writes,
    ReadsOnly,
}

/// Runs one API request the way an unreliable processor would: authenticate, wait, maybe fail
/// or hang before doing anything, do it, and for writes maybe lose the answer afterwards.
async fn simulate<F>(
    simulator: &Simulator,
    request: &HttpRequest,
    effect: Effect,
    operation: F,
) -> HttpResponse
where
    F: FnOnce() -> Result<Answer, ApiFailure>,
{
    if let Err(failure) = authenticate(request) {
        return respond(request, failure.into_answer());
    }
    let faults = simulator.faults();
    let delay = faults.latency(simulator.dice.roll());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match faults.before_effect(simulator.dice.roll(), simulator.dice.roll()) {
        BeforeEffect::Timeout => {
            tracing::warn!(
                path = request.path(),
                "injected timeout before taking effect"
            );
            return hold_then_give_up(request, &faults).await;
        }
        BeforeEffect::Fail => {
            tracing::warn!(
                path = request.path(),
                "injected failure before taking effect"
            );
            let failure = ApiFailure::new(
                500,
                "api_error",
                "An unexpected error occurred in the simulated processor (injected failure); \
                 nothing was applied.",
            );
            return respond(request, failure.into_answer());
        }
        BeforeEffect::Proceed => {}
    }
    let answer = operation().unwrap_or_else(ApiFailure::into_answer);
    if effect == Effect::Writes && faults.lose_answer(simulator.dice.roll()) {
        tracing::warn!(
            path = request.path(),
            status = answer.status,
            "injected timeout after taking effect"
        );
        return hold_then_give_up(request, &faults).await;
    }
    respond(request, answer)
}

/// A processor that never answers in time: keep the client waiting, then answer 504 or cut the
/// connection.
async fn hold_then_give_up(request: &HttpRequest, faults: &FaultSettings) -> HttpResponse {
    tokio::time::sleep(faults.timeout_hold()).await;
    match faults.timeout_mode {
        TimeoutMode::GatewayTimeout => {
            let failure = ApiFailure::new(
                504,
                "api_error",
                "The simulated processor did not answer in time (injected timeout).",
            )
            .code("gateway_timeout");
            respond(request, failure.into_answer())
        }
        // A body that fails before its first byte makes actix abort the connection, so the
        // client sees it close without a complete answer.
        TimeoutMode::Drop => HttpResponse::Ok()
            .content_type("application/json")
            .streaming(futures::stream::once(async {
                Err::<Bytes, _>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "injected dropped connection",
                ))
            })),
    }
}

fn authenticate(request: &HttpRequest) -> Result<(), ApiFailure> {
    let unauthorized = |message: String| ApiFailure::new(401, "invalid_request_error", message);
    let Some(authorization) = header(request, AUTHORIZATION.as_str()) else {
        return Err(unauthorized(
            "You did not provide an API key. Send 'Authorization: Bearer sk_test_...'.".into(),
        ));
    };
    match authorization.strip_prefix("Bearer ") {
        Some(key) if key.starts_with(TEST_KEY_PREFIX) && key.len() > TEST_KEY_PREFIX.len() => {
            Ok(())
        }
        Some(key) => Err(unauthorized(format!(
            "Invalid API Key provided: {}. The simulator accepts only test keys (sk_test_...).",
            redact(key)
        ))),
        None => Err(unauthorized(
            "The Authorization header must be 'Bearer <secret key>'.".into(),
        )),
    }
}

/// Shows a key the way Stripe's errors do: enough to recognise it, not enough to use it.
fn redact(key: &str) -> String {
    let visible: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let prefix: String = key.chars().take(8).collect();
    format!("{prefix}****{visible}")
}

fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

fn json_body(body: &Bytes) -> Result<Value, ApiFailure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    serde_json::from_slice(body)
        .map_err(|error| ApiFailure::invalid_request(format!("Invalid JSON body: {error}")))
}

fn respond(request: &HttpRequest, answer: Answer) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    response.insert_header((
        HeaderName::from_static(REQUEST_ID),
        format!("req_{}", Uuid::new_v4().simple()),
    ));
    if let Some(key) = request.headers().get(IDEMPOTENCY_KEY) {
        response.insert_header((HeaderName::from_static(IDEMPOTENCY_KEY), key.clone()));
    }
    if answer.replayed {
        response.insert_header((HeaderName::from_static(IDEMPOTENT_REPLAYED), "true"));
    }
    response.json(answer.body)
}

async fn get_faults(simulator: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(simulator.faults())
}

/// Replaces the fault settings; fields left out take their "no fault" defaults, so `{}` turns
/// every fault off.
async fn put_faults(
    simulator: web::Data<Simulator>,
    faults: web::Json<FaultSettings>,
) -> Result<HttpResponse, ApiError> {
    let faults = faults.into_inner();
    faults
        .validate()
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    simulator.set_faults(faults);
    tracing::warn!(?faults, "fault injection changed");
    Ok(HttpResponse::Ok().json(faults))
}

async fn charges(simulator: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(simulator.ledger.report())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_keys_keep_only_their_ends() {
        assert_eq!(redact("sk_live_abcdefgh1234"), "sk_live_****1234");
    }
}
