//! The payment service's reactions to the checkout saga, and the workers that talk to the
//! payment provider outside any database transaction. Each reaction and each provider answer is
//! one decide-then-save step ([`apply`]): `payment_rules` decides, `db` stores.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use messaging::{EventHandler, HandlerError, ReceivedEvent};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use events::TraceParent;
use messaging::outbox::{self, Cause};
use messaging::worker::{PollingWorker, Round};
use payment_rules::{PaymentBook, PaymentInput, PaymentState};
use tracing::Instrument;

use crate::config::WorkerSettings;

use crate::db::{self, PaymentDbError, Work};
use crate::provider::{
    ChargeOutcome, ChargeRequest, PaymentProvider, ProviderError, RefundRequest,
};

/// Topics the payment service consumes: declared with its rules.
pub const TOPICS: &[&str] = payment_rules::SUBSCRIPTIONS;

/// The payment service's one decide-then-save step: applies an input to an order's payment
/// under its row lock; `payment_rules` decides, `db` stores.
pub async fn apply(
    tx: &mut PgConnection,
    order_id: &str,
    input: PaymentInput,
    cause: Cause<'_>,
) -> Result<PaymentState, PaymentDbError> {
    let before = db::lock_payment(tx, order_id).await?;
    let decision = payment_rules::decide(order_id, &before, input);
    db::save(tx, order_id, &before, &decision, cause).await?;
    Ok(decision.state)
}

#[derive(Debug)]
pub struct PaymentHandler;

impl EventHandler for PaymentHandler {
    fn handles(&self, event: &events::Event) -> bool {
        payment_rules::HANDLES.contains(&event.event_type())
    }

    /// The whole batch in three statements whatever its size when its payments exist (one or
    /// two more to create new ones): its payments locked (see `db::lock_states`: the order and
    /// inventory topics are handled side by side), the inputs applied in memory
    /// ([`PaymentBook`]), the changes stored in one statement and the events published in
    /// another, each with its own lineage. The worker continues the trace of the last event
    /// that changed a payment.
    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[&ReceivedEvent],
    ) -> Result<(), HandlerError> {
        let inputs: Vec<(&str, PaymentInput, &ReceivedEvent)> = events
            .iter()
            .filter_map(|received| {
                let (order_id, input) = payment_rules::input_of(&received.event)?;
                Some((order_id, input, *received))
            })
            .collect();
        let order_ids: Vec<&str> = inputs.iter().map(|(order_id, _, _)| *order_id).collect();
        let mut book = PaymentBook::new(db::lock_states(tx, &order_ids).await?);
        let mut publish = Vec::new();
        let mut traces: HashMap<&str, TraceParent> = HashMap::new();
        for (order_id, input, received) in inputs {
            let (emitted, changed) = book.apply(order_id, input);
            if changed {
                traces.insert(order_id, received.metadata.traceparent);
            }
            let cause = Cause::Event(&received.metadata);
            publish.extend(emitted.into_iter().map(|event| (event, cause)));
        }
        db::store(tx, &book.changes(), |order_id| {
            traces.get(order_id).copied()
        })
        .await?;
        outbox::publish_caused(tx, &publish).await?;
        Ok(())
    }
}

/// Sends due charges and refunds to the provider until shutdown. A provider call never runs
/// inside a database transaction: the row is claimed with a lease, the call is made, and the
/// outcome is applied in a new transaction. The order id is the idempotency key, so retrying
/// after a crash or timeout cannot charge twice.
pub async fn run_payment_worker<P: PaymentProvider>(
    pool: PgPool,
    provider: Arc<P>,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let lease = Duration::from_millis(settings.lease_ms);
    PollingWorker::new(
        "payment provider calls",
        Duration::from_millis(settings.poll_ms),
    )
    .woken_by(db::WORK_CHANNEL)
    .run(pool.clone(), shutdown, || {
        settle_due(&pool, &provider, &settings, lease)
    })
    .await
}

/// One round: claims due charges and refunds (one statement, at most `concurrency`) and settles
/// them with the provider, the calls side by side. Busy only when the claim filled its batch:
/// work that became due meanwhile announced itself on [`db::WORK_CHANNEL`] (as does a refund a
/// settlement makes due), and the worker's listener kept that wake-up for the next wait. An
/// empty round after every call was a claim statement more per payment.
async fn settle_due<P: PaymentProvider>(
    pool: &PgPool,
    provider: &Arc<P>,
    settings: &WorkerSettings,
    lease: Duration,
) -> Result<Round, PaymentDbError> {
    let claimed = db::claim_due(pool, settings.concurrency, lease).await?;
    let round = Round::of(claimed.len(), settings.concurrency);
    let calls = claimed.iter().map(|claimed| async move {
        let db::Claimed {
            work,
            order_id,
            state,
            trace,
        } = claimed;
        let span = provider_span(*work, order_id, trace.as_ref());
        if let Err(error) = settle(pool, provider.as_ref(), settings, *work, order_id, state, trace.as_ref())
            .instrument(span)
            .await
        {
            tracing::warn!(order_id, error = %error, "payment work failed; its lease will lapse and it is retried");
        }
    });
    futures::future::join_all(calls).await;
    Ok(round)
}

/// With spans exported, the span of one call to the processor and what the service stored and
/// published from its answer, in the checkout's trace; otherwise no span at all.
fn provider_span(work: Work, order_id: &str, trace: Option<&TraceParent>) -> tracing::Span {
    if !platform::telemetry::exporting() {
        return tracing::Span::none();
    }
    let call = match work {
        Work::Charge => "charge",
        Work::Refund => "refund",
    };
    let span = tracing::info_span!(
        "payment_provider_call",
        call,
        order_id,
        "otel.kind" = "client"
    );
    if let Some(trace) = trace {
        platform::telemetry::continue_trace(
            &span,
            platform::telemetry::Remote {
                trace_id: trace.trace_id,
                span_id: trace.span_id,
                sampled: trace.sampled,
            },
        );
    }
    span
}

async fn settle<P: PaymentProvider>(
    pool: &PgPool,
    provider: &P,
    settings: &WorkerSettings,
    work: Work,
    order_id: &str,
    state: &PaymentState,
    trace: Option<&TraceParent>,
) -> Result<(), PaymentDbError> {
    // The processor's answer continues the checkout's trace.
    let cause = Cause::Origin(trace);
    let Some(terms) = &state.terms else {
        return Ok(());
    };
    let outcome: Result<PaymentInput, ProviderError> = match work {
        Work::Charge => provider
            .charge(&ChargeRequest {
                idempotency_key: order_id.to_owned(),
                amount_minor: terms.amount_minor,
                currency: terms.currency.clone(),
                payment_token: terms.payment_token.clone(),
                description: format!("Bazaar order {order_id}"),
            })
            .await
            .map(|outcome| match outcome {
                ChargeOutcome::Succeeded { payment_id } => {
                    PaymentInput::ChargeSucceeded { payment_id }
                }
                ChargeOutcome::Declined { reason } => PaymentInput::ChargeDeclined { reason },
            }),
        Work::Refund => match &state.payment_id {
            Some(payment_id) => provider
                .refund(&RefundRequest {
                    idempotency_key: format!("refund-{order_id}"),
                    payment_id: payment_id.clone(),
                    amount_minor: terms.amount_minor,
                })
                .await
                .map(|_| PaymentInput::RefundSucceeded),
            None => return Ok(()),
        },
    };
    let call = match work {
        Work::Charge => "charge",
        Work::Refund => "refund",
    };
    let result = match &outcome {
        Ok(PaymentInput::ChargeDeclined { .. }) => "declined",
        Ok(_) => "succeeded",
        Err(_) => "error",
    };
    metrics::counter!("payment_provider_calls_total", "call" => call, "outcome" => result)
        .increment(1);
    let mut tx = pool.begin().await?;
    match outcome {
        Ok(input) => {
            apply(&mut tx, order_id, input, cause).await?;
            db::release(&mut tx, order_id, None).await?;
        }
        Err(error) => {
            let attempts = db::attempts(&mut *tx, order_id).await?;
            let delay = backoff(settings, attempts);
            tracing::warn!(order_id, %error, attempts, retry_in = ?delay, "payment provider call failed; will retry");
            if work == Work::Charge {
                // The charge may have gone through: it must be resolved before anything else.
                apply(&mut tx, order_id, PaymentInput::ChargeOutcomeUnknown, cause).await?;
            }
            db::release(&mut tx, order_id, Some(delay)).await?;
            metrics::counter!("payment_provider_failures_total").increment(1);
        }
    }
    tx.commit().await?;
    Ok(())
}

fn backoff(settings: &WorkerSettings, attempts: i32) -> Duration {
    let factor = 1u64 << attempts.clamp(0, 10);
    Duration::from_millis(
        settings
            .retry_initial_ms
            .saturating_mul(factor)
            .min(settings.retry_max_ms),
    )
}
