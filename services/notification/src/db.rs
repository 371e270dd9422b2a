use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use notification_rules::{AfterAttempt, EmailStatus, Kind, Notice, OrderFacts};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Raised (on commit) whenever an e-mail may have become sendable, so the sender worker does not
/// wait for its next poll.
pub const MAIL_CHANNEL: &str = "notification_mail";

async fn wake_sender(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(MAIL_CHANNEL)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Records a user's address; e-mails that waited for it become sendable.
pub async fn remember_customer(
    tx: &mut PgConnection,
    user_id: Uuid,
    email: &str,
    display_name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO customers (user_id, email, display_name) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE
            SET email = EXCLUDED.email, display_name = EXCLUDED.display_name, updated_at = now()",
    )
    .bind(user_id)
    .bind(email)
    .bind(display_name)
    .execute(&mut *tx)
    .await?;
    wake_sender(tx).await
}

/// Records whose an order is, and hands that customer the notices that arrived before.
pub async fn remember_order(
    tx: &mut PgConnection,
    order_id: Uuid,
    user_id: Uuid,
    facts: &OrderFacts,
) -> Result<(), sqlx::Error> {
    lock_order(tx, order_id).await?;
    // One statement, after the lock's: its snapshot then sees every notice committed before.
    let addressed = sqlx::query(
        "WITH remembered AS (
             INSERT INTO customer_orders (order_id, user_id, total_minor, currency)
             VALUES ($1, $2, $3, $4) ON CONFLICT (order_id) DO NOTHING
         )
         UPDATE notifications SET user_id = $2 WHERE order_id = $1 AND user_id IS NULL",
    )
    .bind(order_id)
    .bind(user_id)
    .bind(facts.total_minor)
    .bind(&facts.currency)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if addressed > 0 {
        wake_sender(tx).await?;
    }
    Ok(())
}

/// The customer and facts of an order, once its OrderCreated has been read, and the kinds of
/// notice it has already. Holds the order's lock to the end of the transaction, so a notice
/// recorded without its customer is addressed by the OrderCreated that follows.
pub async fn order_facts(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<(Option<(Uuid, OrderFacts)>, Vec<Kind>), sqlx::Error> {
    lock_order(tx, order_id).await?;
    let (user_id, total_minor, currency, noticed): (
        Option<Uuid>,
        Option<i64>,
        Option<String>,
        Vec<String>,
    ) = sqlx::query_as(
        "SELECT c.user_id, c.total_minor, c.currency,
                ARRAY(SELECT kind FROM notifications WHERE order_id = $1)
           FROM (SELECT $1::uuid AS order_id) AS wanted
           LEFT JOIN customer_orders c USING (order_id)",
    )
    .bind(order_id)
    .fetch_one(&mut *tx)
    .await?;
    let facts = user_id
        .zip(total_minor)
        .zip(currency)
        .map(|((user_id, total_minor), currency)| {
            (
                user_id,
                OrderFacts {
                    total_minor,
                    currency,
                },
            )
        });
    // A kind this version does not know cannot be one it would notice again.
    let noticed = noticed
        .iter()
        .filter_map(|kind| kind.parse().ok())
        .collect();
    Ok((facts, noticed))
}

/// Serialises what is learnt of one order with the notices about it. OrderCreated and the
/// events that become notices arrive on different topics, handled side by side (by partition,
/// and by instance): without the lock, a notice could miss a customer committed at the same
/// moment, and the OrderCreated miss the notice to address, leaving it unaddressed for good.
async fn lock_order(tx: &mut PgConnection, order_id: Uuid) -> Result<(), sqlx::Error> {
    lock_orders(tx, &[order_id]).await
}

/// Takes the locks of [`lock_order`] for several orders, in id order, so that transactions
/// handling several orders never wait on each other in a circle. A session may take the same
/// advisory lock again; it is held to the end of the transaction.
pub async fn lock_orders(tx: &mut PgConnection, order_ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if order_ids.is_empty() {
        return Ok(());
    }
    // The sort happens in the subquery, so the locks are taken in that order.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended(id::text, 0))
           FROM (SELECT DISTINCT id FROM unnest($1::uuid[]) AS id ORDER BY id) AS sorted",
    )
    .bind(order_ids)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Where a notice came from.
#[derive(Debug, Clone)]
pub struct Source {
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub message_id: String,
}

/// Stores a notice and its pending e-mail. The unique indexes keep a second notice of this event
/// (or of its kind for its order) out even if two transactions raced; returns whether it was
/// stored.
pub async fn record_notice(
    tx: &mut PgConnection,
    order_id: Uuid,
    user_id: Option<Uuid>,
    notice: &Notice,
    source: &Source,
) -> Result<bool, sqlx::Error> {
    let id = Uuid::now_v7();
    // The notice, its e-mail and the sender's wake-up in one round trip; a notice already
    // stored inserts nothing, and so queues and wakes nothing.
    let inserted = sqlx::query(
        "WITH notice AS (
             INSERT INTO notifications (id, user_id, order_id, kind, subject, body, source_event_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT DO NOTHING
             RETURNING id
         ), email AS (
             INSERT INTO outgoing_emails (notification_id, message_id)
             SELECT id, $9 FROM notice
             RETURNING notification_id
         )
         SELECT pg_notify($10, '') FROM email",
    )
    .bind(id)
    .bind(user_id)
    .bind(order_id)
    .bind(notice.kind.as_str())
    .bind(&notice.subject)
    .bind(&notice.body)
    .bind(source.event_id)
    .bind(source.occurred_at)
    .bind(&source.message_id)
    .bind(MAIL_CHANNEL)
    .fetch_optional(&mut *tx)
    .await?
    .is_some();
    Ok(inserted)
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Notification)]
pub struct FeedItem {
    pub id: Uuid,
    pub kind: String,
    pub order_id: Option<Uuid>,
    pub subject: String,
    pub body: String,
    pub read: bool,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const FEED_COLUMNS: &str =
    "id, kind, order_id, subject, body, read_at IS NOT NULL AS read, read_at, created_at";

/// A user's newest notifications, and how many of all of theirs are unread.
pub async fn feed(
    pool: &PgPool,
    user_id: Uuid,
    limit: i64,
) -> Result<(Vec<FeedItem>, i64), sqlx::Error> {
    let items = sqlx::query_as::<Postgres, FeedItem>(sqlx::AssertSqlSafe(format!(
        "SELECT {FEED_COLUMNS} FROM notifications WHERE user_id = $1
          ORDER BY created_at DESC, id DESC LIMIT $2"
    )))
    .bind(user_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let (unread,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL")
            .bind(user_id)
            .fetch_one(pool)
            .await?;
    Ok((items, unread))
}

/// Marks one of the user's notifications read (keeping the first time it was); `None` if the
/// user has no such notification.
pub async fn mark_read(
    pool: &PgPool,
    user_id: Uuid,
    id: Uuid,
) -> Result<Option<FeedItem>, sqlx::Error> {
    sqlx::query_as::<Postgres, FeedItem>(sqlx::AssertSqlSafe(format!(
        "UPDATE notifications SET read_at = COALESCE(read_at, now())
          WHERE id = $1 AND user_id = $2
          RETURNING {FEED_COLUMNS}"
    )))
    .bind(id)
    .bind(user_id)
    .fetch_optional(pool)
    .await
}

/// An e-mail claimed for sending, with everything needed to build it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueEmail {
    pub notification_id: Uuid,
    pub source_event_id: Uuid,
    pub message_id: String,
    pub attempts: i32,
    pub subject: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub email: String,
    pub display_name: String,
}

/// Claims up to `limit` pending e-mails that are due and whose customer's address is known,
/// for `lease`; other workers skip them meanwhile.
pub async fn claim_due_emails(
    pool: &PgPool,
    limit: i64,
    lease: Duration,
) -> Result<Vec<DueEmail>, sqlx::Error> {
    // The status is written into the statement, not bound: the planner then uses the partial
    // index of pending e-mails.
    sqlx::query_as::<Postgres, DueEmail>(sqlx::AssertSqlSafe(format!(
        "WITH claimed AS (
             UPDATE outgoing_emails SET lease_until = now() + make_interval(secs => $2)
              WHERE notification_id IN (
                  SELECT e.notification_id FROM outgoing_emails e
                    JOIN notifications n ON n.id = e.notification_id
                    JOIN customers c ON c.user_id = n.user_id
                   WHERE e.status = '{pending}' AND e.next_attempt_at <= now()
                     AND (e.lease_until IS NULL OR e.lease_until < now())
                   ORDER BY e.next_attempt_at LIMIT $1
                   FOR UPDATE OF e SKIP LOCKED)
              RETURNING notification_id, message_id, attempts)
         SELECT claimed.notification_id, n.source_event_id, claimed.message_id, claimed.attempts,
                n.subject, n.body, n.created_at, c.email, c.display_name
           FROM claimed
           JOIN notifications n ON n.id = claimed.notification_id
           JOIN customers c ON c.user_id = n.user_id",
        pending = EmailStatus::Pending.as_str()
    )))
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// Stores the outcome of an attempt and releases the claim. Only a pending e-mail changes, so a
/// late outcome never reopens a sent one.
pub async fn record_attempt(
    pool: &PgPool,
    notification_id: Uuid,
    after: &AfterAttempt,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let attempts = i32::try_from(after.state.attempts).unwrap_or(i32::MAX);
    sqlx::query(
        "UPDATE outgoing_emails
            SET status = $2, attempts = $3, lease_until = NULL, last_error = $5,
                next_attempt_at = now() + make_interval(secs => $4),
                sent_at = CASE WHEN $2 = $6 THEN now() ELSE sent_at END
          WHERE notification_id = $1 AND status = $7",
    )
    .bind(notification_id)
    .bind(after.state.status.as_str())
    .bind(attempts)
    .bind(after.retry_in.unwrap_or_default().as_secs_f64())
    .bind(error)
    .bind(EmailStatus::Sent.as_str())
    .bind(EmailStatus::Pending.as_str())
    .execute(pool)
    .await?;
    Ok(())
}
