//! The payment database: each order's payment state, the transactions settled with the
//! processor, and the work queues of the provider workers. Loading and storing only: what
//! changes is decided by `payment_rules`, in `crate::consumers`.

use events::TraceParent;
use messaging::outbox::{self, Cause};
use payment_rules::{ChargeStatus, Decision, PaymentChanges, PaymentState, RefundStatus};
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Channel the workers listen on; raised when a charge or refund becomes due.
pub const WORK_CHANNEL: &str = "payments_due";

#[derive(Debug, thiserror::Error)]
pub enum PaymentDbError {
    #[error("database")]
    Database(#[from] sqlx::Error),
    #[error("outbox")]
    Outbox(#[from] outbox::OutboxError),
    #[error("stored payment state is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// The payments of `order_ids`, their rows locked, each created (and so locked) where the order
/// is new; one statement when every payment exists, two or three otherwise. Existing rows are
/// locked first, in order id order, then new ones are created in that order: a transaction
/// waits on an existing row only before it holds a new one, so transactions handling several
/// orders never wait on each other in a circle, and two inputs for a new order serialise on
/// its row.
pub async fn lock_states(
    tx: &mut PgConnection,
    order_ids: &[&str],
) -> Result<Vec<(String, PaymentState)>, sqlx::Error> {
    if order_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut sorted = order_ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut states = lock_existing(tx, &sorted).await?;
    let missing: Vec<&str> = sorted
        .iter()
        .copied()
        .filter(|id| !states.iter().any(|(known, _)| known == id))
        .collect();
    if missing.is_empty() {
        return Ok(states);
    }
    let created = create_payments(tx, &missing).await?;
    // Created meanwhile by another transaction: locked as that one left it.
    let raced: Vec<&str> = missing
        .into_iter()
        .filter(|id| !created.iter().any(|(new, _)| new == id))
        .collect();
    states.extend(created);
    if !raced.is_empty() {
        states.extend(lock_existing(tx, &raced).await?);
    }
    Ok(states)
}

/// The payments of `order_ids` that exist, their rows locked in order id order.
async fn lock_existing(
    tx: &mut PgConnection,
    order_ids: &[&str],
) -> Result<Vec<(String, PaymentState)>, sqlx::Error> {
    let locked: Vec<(String, sqlx::types::Json<PaymentState>)> = sqlx::query_as(
        "SELECT order_id, state FROM payments WHERE order_id = ANY($1)
          ORDER BY order_id FOR UPDATE",
    )
    .bind(order_ids)
    .fetch_all(&mut *tx)
    .await?;
    Ok(locked
        .into_iter()
        .map(|(order_id, state)| (order_id, state.0))
        .collect())
}

/// Creates the payments of `order_ids` not seen before, waiting, each row locked by this
/// transaction until it commits; returns the states of those it created. A payment another
/// transaction is creating meanwhile is left to it: the conflict waits for that one.
async fn create_payments(
    tx: &mut PgConnection,
    order_ids: &[&str],
) -> Result<Vec<(String, PaymentState)>, sqlx::Error> {
    let new = PaymentState::default();
    let created: Vec<(String, sqlx::types::Json<PaymentState>)> = sqlx::query_as(
        "INSERT INTO payments (order_id, state, charge_status, refund_status)
         SELECT order_id, $2, $3, $4 FROM unnest($1::text[]) AS order_id
         ON CONFLICT (order_id) DO NOTHING
         RETURNING order_id, state",
    )
    .bind(order_ids)
    .bind(sqlx::types::Json(&new))
    .bind(new.charge.as_str())
    .bind(new.refund.as_str())
    .fetch_all(&mut *tx)
    .await?;
    Ok(created
        .into_iter()
        .map(|(order_id, state)| (order_id, state.0))
        .collect())
}

/// An order's payment state, its row locked (created, waiting, when the order is new).
pub async fn lock_payment(
    tx: &mut PgConnection,
    order_id: &str,
) -> Result<PaymentState, PaymentDbError> {
    let (_, state) = lock_states(tx, &[order_id])
        .await?
        .pop()
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok(state)
}

/// The trace the worker continues for a payment changed by `cause`: the handling span when spans
/// are exported, otherwise the cause's own.
fn trace_of(cause: Cause<'_>) -> Option<TraceParent> {
    if let Some(own) = platform::telemetry::trace_context(&tracing::Span::current()) {
        return Some(TraceParent {
            trace_id: own.trace_id,
            span_id: own.span_id,
            sampled: own.sampled,
        });
    }
    match cause {
        Cause::Event(metadata) => Some(metadata.traceparent),
        Cause::Origin(trace) => trace.copied(),
    }
}

/// Stores a decision about a locked payment that was in `before`: the new state (waking the
/// workers when work became due), the transaction it settled, and the events it publishes.
pub async fn save(
    tx: &mut PgConnection,
    order_id: &str,
    before: &PaymentState,
    decision: &Decision,
    cause: Cause<'_>,
) -> Result<(), PaymentDbError> {
    let changed = decision.state != *before;
    let changes = PaymentChanges {
        states: if changed {
            vec![(order_id.to_owned(), decision.state.clone())]
        } else {
            Vec::new()
        },
        records: decision
            .record
            .iter()
            .map(|record| (order_id.to_owned(), record.clone()))
            .collect(),
        newly_due: decision.newly_due && changed,
    };
    let trace = trace_of(cause);
    store(tx, &changes, |_| trace).await?;
    outbox::publish_all(tx, &decision.emit, cause).await?;
    Ok(())
}

/// Stores what a transaction's inputs changed, in one statement: the payments' new states
/// (each with the trace its worker continues, `trace`), the transactions they settled, and,
/// when a provider call became due, the workers' wake-up (delivered at commit).
pub async fn store(
    tx: &mut PgConnection,
    changes: &PaymentChanges,
    trace: impl Fn(&str) -> Option<TraceParent>,
) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let states = &changes.states;
    let records = &changes.records;
    let (updated, _): (i64, i64) = sqlx::query_as(
        "WITH updated AS (
             UPDATE payments p
                SET state = s.state, charge_status = s.charge_status,
                    refund_status = s.refund_status, updated_at = now(),
                    traceparent = COALESCE(s.traceparent, p.traceparent)
               FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::text[], $5::text[])
                    AS s (order_id, state, charge_status, refund_status, traceparent)
              WHERE p.order_id = s.order_id
          RETURNING p.order_id
         ), recorded AS (
             INSERT INTO payment_transactions (id, order_id, kind, status, amount_minor, currency,
                                               provider_reference)
             SELECT id, order_id::uuid, kind, status, amount_minor, currency, provider_reference
               FROM unnest($6::uuid[], $7::text[], $8::text[], $9::text[], $10::bigint[],
                           $11::text[], $12::text[])
                    AS r (id, order_id, kind, status, amount_minor, currency, provider_reference)
         )
         SELECT (SELECT count(*) FROM updated),
                (SELECT count(*) FROM (SELECT pg_notify($13, '') WHERE $14) AS woken)",
    )
    .bind(states.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
    .bind(
        states
            .iter()
            .map(|(_, state)| sqlx::types::Json(state))
            .collect::<Vec<_>>(),
    )
    .bind(
        states
            .iter()
            .map(|(_, state)| state.charge.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        states
            .iter()
            .map(|(_, state)| state.refund.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        states
            .iter()
            .map(|(id, _)| trace(id).map(|trace| trace.to_string()))
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|_| uuid::Uuid::now_v7())
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|(_, record)| record.kind.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|(_, record)| record.status.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|(_, record)| record.amount_minor)
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|(_, record)| record.currency.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|(_, record)| record.provider_reference.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(WORK_CHANNEL)
    .bind(changes.newly_due)
    .fetch_one(&mut *tx)
    .await?;
    // Every payment stored was locked (and created) first: one that matched no row would be a
    // change lost.
    if updated != states.len() as i64 {
        return Err(sqlx::Error::Protocol(format!(
            "{} of {} payments stored",
            updated,
            states.len()
        )));
    }
    Ok(())
}

/// A payment a worker claimed: what is due on it, its state and the trace of its checkout.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub work: Work,
    pub order_id: String,
    pub state: PaymentState,
    pub trace: Option<TraceParent>,
}

/// Which queue a worker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Charge,
    Refund,
}

/// Claims up to `limit` due payments for `lease`, charges before refunds, in one statement;
/// other workers skip them meanwhile.
pub async fn claim_due(
    pool: &PgPool,
    limit: i64,
    lease: std::time::Duration,
) -> Result<Vec<Claimed>, PaymentDbError> {
    // The statuses are written into the statement, not bound: the planner then uses the
    // partial indexes of due work. A claimed charge counts as attempted from now on
    // (`payment_rules::claim_charge`, set here in the statement that claims the row): a
    // cancellation arriving while the call is in flight must wait for its outcome (and refund
    // it) rather than forget it. A row is never both (a refund falls due only once a charge
    // succeeded), and the refunds' select leaves out what the charges' claimed, since one
    // statement must not update a row twice.
    let statement = format!(
        "WITH charges AS (
             UPDATE payments SET lease_until = now() + make_interval(secs => $2),
                                 state = jsonb_set(state, '{{attempted}}', 'true')
              WHERE order_id IN (
                  SELECT order_id FROM payments
                   WHERE charge_status = '{charge_due}' AND next_attempt_at <= now()
                     AND (lease_until IS NULL OR lease_until < now())
                   ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
              RETURNING order_id, state, traceparent
         ), refunds AS (
             UPDATE payments SET lease_until = now() + make_interval(secs => $2)
              WHERE order_id IN (
                  SELECT order_id FROM payments
                   WHERE refund_status = '{refund_due}' AND next_attempt_at <= now()
                     AND (lease_until IS NULL OR lease_until < now())
                   ORDER BY next_attempt_at
                   LIMIT greatest($1 - (SELECT count(*) FROM charges), 0)
                     FOR UPDATE SKIP LOCKED)
                AND order_id NOT IN (SELECT order_id FROM charges)
              RETURNING order_id, state, traceparent
         )
         SELECT true, order_id, state, traceparent FROM charges
         UNION ALL
         SELECT false, order_id, state, traceparent FROM refunds",
        charge_due = ChargeStatus::Due.as_str(),
        refund_due = RefundStatus::Due.as_str(),
    );
    let rows: Vec<(
        bool,
        String,
        sqlx::types::Json<PaymentState>,
        Option<String>,
    )> = sqlx::query_as(sqlx::AssertSqlSafe(statement))
        .bind(limit)
        .bind(lease.as_secs_f64())
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(charge, id, state, trace)| Claimed {
            work: if charge { Work::Charge } else { Work::Refund },
            order_id: id,
            state: state.0,
            trace: trace.and_then(|text| text.parse().ok()),
        })
        .collect())
}

/// Releases a claim; after a failure the row is retried no sooner than `retry_in`.
pub async fn release(
    tx: &mut PgConnection,
    order_id: &str,
    retry_in: Option<std::time::Duration>,
) -> Result<(), sqlx::Error> {
    match retry_in {
        Some(delay) => sqlx::query(
            "UPDATE payments SET lease_until = NULL, attempts = attempts + 1,
                    next_attempt_at = now() + make_interval(secs => $2)
              WHERE order_id = $1",
        )
        .bind(order_id)
        .bind(delay.as_secs_f64()),
        None => {
            sqlx::query("UPDATE payments SET lease_until = NULL, attempts = 0 WHERE order_id = $1")
                .bind(order_id)
        }
    }
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Attempts made so far on a row (for backoff).
pub async fn attempts<'c>(
    db: impl sqlx::PgExecutor<'c>,
    order_id: &str,
) -> Result<i32, sqlx::Error> {
    let (attempts,): (i32,) = sqlx::query_as("SELECT attempts FROM payments WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(db)
        .await?;
    Ok(attempts)
}
