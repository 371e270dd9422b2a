use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use notification_rules::{AfterAttempt, EmailStatus, KnownOrder, Notice, OrderFacts};

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

/// An order, its customer, total and currency once known, and the kinds of its notices.
type KnownRow = (Uuid, Option<Uuid>, Option<i64>, Option<String>, Vec<String>);

/// What is known of `orders` (whose each is and what it costs, once its OrderCreated was read,
/// and the kinds of notice each has), in one statement. The caller holds the orders' locks
/// ([`lock_orders`]), taken in a statement before this one: its snapshot then sees every notice
/// and customer committed before.
pub async fn known_orders(
    tx: &mut PgConnection,
    orders: &[Uuid],
) -> Result<Vec<(Uuid, KnownOrder<Uuid>)>, sqlx::Error> {
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<KnownRow> = sqlx::query_as(
        "SELECT wanted.order_id, c.user_id, c.total_minor, c.currency,
                    ARRAY(SELECT kind FROM notifications n WHERE n.order_id = wanted.order_id)
               FROM (SELECT DISTINCT order_id FROM unnest($1::uuid[]) AS listed (order_id))
                    AS wanted
               LEFT JOIN customer_orders c USING (order_id)",
    )
    .bind(orders)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(order_id, user_id, total_minor, currency, noticed)| {
            let customer =
                user_id
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
            (order_id, KnownOrder { customer, noticed })
        })
        .collect())
}

/// A notice to store, for its order's customer when known, with where it came from.
#[derive(Debug, Clone)]
pub struct NewNotice {
    pub order_id: Uuid,
    pub user_id: Option<Uuid>,
    pub notice: Notice,
    pub source: Source,
}

/// Stores, in one statement, the orders learnt (`remembered`: order, customer, facts; a
/// replay keeps the first) with the notices that waited for their customer addressed to it,
/// and the new notices each with its pending e-mail, and wakes the sender when an e-mail may
/// have become sendable. The unique indexes keep a second notice of an event (or of its kind
/// for its order) out even if two transactions raced. Says of each notice whether it was
/// stored.
pub async fn record(
    tx: &mut PgConnection,
    remembered: &[(Uuid, Uuid, OrderFacts)],
    notices: &[NewNotice],
) -> Result<Vec<bool>, sqlx::Error> {
    if remembered.is_empty() && notices.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = notices.iter().map(|_| Uuid::now_v7()).collect();
    let (stored, _): (Vec<Uuid>, i64) = sqlx::query_as(
        "WITH remembered AS (
             INSERT INTO customer_orders (order_id, user_id, total_minor, currency)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[])
             ON CONFLICT (order_id) DO NOTHING
         ), addressed AS (
             UPDATE notifications n SET user_id = learnt.user_id
               FROM unnest($1::uuid[], $2::uuid[]) AS learnt (order_id, user_id)
              WHERE n.order_id = learnt.order_id AND n.user_id IS NULL
          RETURNING n.id
         ), notice AS (
             INSERT INTO notifications (id, user_id, order_id, kind, subject, body,
                                        source_event_id, created_at)
             SELECT * FROM unnest($5::uuid[], $6::uuid[], $7::uuid[], $8::text[], $9::text[],
                                  $10::text[], $11::uuid[], $12::timestamptz[])
             ON CONFLICT DO NOTHING
             RETURNING id
         ), email AS (
             INSERT INTO outgoing_emails (notification_id, message_id)
             SELECT notice.id, mail.message_id
               FROM notice JOIN unnest($5::uuid[], $13::text[]) AS mail (id, message_id)
                    USING (id)
             RETURNING notification_id
         )
         SELECT ARRAY(SELECT id FROM notice),
                (SELECT count(*) FROM (SELECT pg_notify($14, '')
                  WHERE EXISTS (SELECT 1 FROM email) OR EXISTS (SELECT 1 FROM addressed))
                 AS woken)",
    )
    .bind(
        remembered
            .iter()
            .map(|(order, _, _)| *order)
            .collect::<Vec<_>>(),
    )
    .bind(
        remembered
            .iter()
            .map(|(_, user, _)| *user)
            .collect::<Vec<_>>(),
    )
    .bind(
        remembered
            .iter()
            .map(|(_, _, facts)| facts.total_minor)
            .collect::<Vec<_>>(),
    )
    .bind(
        remembered
            .iter()
            .map(|(_, _, facts)| facts.currency.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(&ids)
    .bind(notices.iter().map(|new| new.user_id).collect::<Vec<_>>())
    .bind(notices.iter().map(|new| new.order_id).collect::<Vec<_>>())
    .bind(
        notices
            .iter()
            .map(|new| new.notice.kind.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        notices
            .iter()
            .map(|new| new.notice.subject.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        notices
            .iter()
            .map(|new| new.notice.body.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        notices
            .iter()
            .map(|new| new.source.event_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        notices
            .iter()
            .map(|new| new.source.occurred_at)
            .collect::<Vec<_>>(),
    )
    .bind(
        notices
            .iter()
            .map(|new| new.source.message_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(MAIL_CHANNEL)
    .fetch_one(&mut *tx)
    .await?;
    Ok(ids.iter().map(|id| stored.contains(id)).collect())
}

/// Serialises what is learnt of orders with the notices about them. OrderCreated and the
/// events that become notices arrive on different topics, handled side by side (by partition,
/// and by instance): without the lock, a notice could miss a customer committed at the same
/// moment, and the OrderCreated miss the notice to address, leaving it unaddressed for good.
/// The locks are taken in id order, so that transactions handling several orders never wait on
/// each other in a circle. A session may take the same
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

/// Stores one notice and its pending e-mail ([`record`]); returns whether it was stored (not a
/// second notice of its event, or of its kind for its order).
pub async fn record_notice(
    tx: &mut PgConnection,
    order_id: Uuid,
    user_id: Option<Uuid>,
    notice: &Notice,
    source: &Source,
) -> Result<bool, sqlx::Error> {
    let stored = record(
        tx,
        &[],
        &[NewNotice {
            order_id,
            user_id,
            notice: notice.clone(),
            source: source.clone(),
        }],
    )
    .await?;
    Ok(stored.first().copied().unwrap_or(false))
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
