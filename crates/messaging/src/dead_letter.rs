//! Dead letters and parked keys.
//!
//! A message that can never succeed is parked: its key is recorded, the message is kept in
//! `messaging_parked_messages`, and a copy goes to `<topic>.dlq` (through the outbox, so the
//! copy commits with the parking) with headers naming the error, origin and attempts. Later
//! messages of a parked key are parked behind it, keeping the key's order; other keys flow on.
//! After a fix, [`request_redrive`] asks the consumer to replay a key's parked messages in
//! order; the key is released once all of them went through.

use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::consumer::{EventHandler, Failure, HandlerError, IdempotentConsumer, record_in_inbox};
use crate::outbox::{self, OutboxRecord, PayloadFormat};
use crate::record::Record;

/// Header names added to dead-lettered copies.
pub mod headers {
    pub const ERROR: &str = "dlq-error";
    pub const REASON: &str = "dlq-reason";
    pub const ORIGINAL_TOPIC: &str = "dlq-original-topic";
    pub const ORIGINAL_PARTITION: &str = "dlq-original-partition";
    pub const ORIGINAL_OFFSET: &str = "dlq-original-offset";
    pub const ATTEMPTS: &str = "dlq-attempts";
    pub const CONSUMER_GROUP: &str = "dlq-consumer-group";
}

const PARKED_BEHIND: &str = "parked behind an earlier message of the same key";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ParkedKey {
    pub topic: String,
    pub message_key: String,
    pub error: String,
    pub parked_at: chrono::DateTime<chrono::Utc>,
    pub redrive_requested_at: Option<chrono::DateTime<chrono::Utc>>,
    pub parked_messages: i64,
}

/// Every parked key with how many messages wait behind it.
pub async fn parked_keys(pool: &PgPool) -> Result<Vec<ParkedKey>, sqlx::Error> {
    sqlx::query_as(
        "SELECT k.topic, k.message_key, k.error, k.parked_at, k.redrive_requested_at,
                (SELECT count(*) FROM messaging_parked_messages m
                  WHERE m.topic = k.topic AND m.message_key = k.message_key) AS parked_messages
           FROM messaging_parked_keys k ORDER BY k.parked_at",
    )
    .fetch_all(pool)
    .await
}

/// Announces every change to the parked keys (migration 0002): consumers listen on it.
pub const PARKED_KEYS_CHANNEL: &str = "messaging_parked_keys";

/// Asks the consumer to replay the parked messages of `key` (or of every key of `topic`) in
/// order. Returns how many keys were marked.
pub async fn request_redrive(
    pool: &PgPool,
    topic: &str,
    key: Option<&str>,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE messaging_parked_keys SET redrive_requested_at = clock_timestamp()
          WHERE topic = $1 AND ($2::text IS NULL OR message_key = $2)",
    )
    .bind(topic)
    .bind(key)
    .execute(pool)
    .await?
    .rows_affected())
}

pub(crate) async fn is_parked(
    tx: &mut PgConnection,
    topic: &str,
    key: &str,
) -> Result<bool, sqlx::Error> {
    // FOR UPDATE serialises parking, parking-behind and redrive of one key.
    let found: Option<(i32,)> = sqlx::query_as(
        "SELECT 1 FROM messaging_parked_keys WHERE topic = $1 AND message_key = $2 FOR UPDATE",
    )
    .bind(topic)
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(found.is_some())
}

/// Parks a message that failed for good, and its key (a keyless message is only dead-lettered).
pub(crate) async fn park(
    pool: &PgPool,
    group: &str,
    topic_prefix: &str,
    raw: &Record,
    error: &str,
    attempts: u32,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    if let Some(key) = &raw.key {
        sqlx::query(
            "INSERT INTO messaging_parked_keys (topic, message_key, error) VALUES ($1, $2, $3)
             ON CONFLICT (topic, message_key) DO NOTHING",
        )
        .bind(&raw.topic)
        .bind(key)
        .bind(error)
        .execute(&mut *tx)
        .await?;
    }
    keep(&mut tx, group, topic_prefix, raw, error, "failed", attempts).await?;
    tx.commit().await
}

/// Parks a message behind its already parked key, in the caller's transaction.
pub(crate) async fn park_behind(
    tx: &mut PgConnection,
    group: &str,
    topic_prefix: &str,
    raw: &Record,
) -> Result<(), sqlx::Error> {
    keep(tx, group, topic_prefix, raw, PARKED_BEHIND, "parked", 0).await
}

async fn keep(
    tx: &mut PgConnection,
    group: &str,
    topic_prefix: &str,
    raw: &Record,
    error: &str,
    reason: &str,
    attempts: u32,
) -> Result<(), sqlx::Error> {
    let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
    sqlx::query(
        "INSERT INTO messaging_parked_messages
            (topic, message_key, partition, \"offset\", payload, headers, error, attempts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (topic, partition, \"offset\") DO NOTHING",
    )
    .bind(&raw.topic)
    .bind(raw.key.as_deref().unwrap_or_default())
    .bind(raw.partition)
    .bind(raw.offset)
    .bind(raw.payload.as_deref())
    .bind(sqlx::types::Json(&raw.headers))
    .bind(error)
    .bind(attempts)
    .execute(&mut *tx)
    .await?;

    let logical_topic = raw.topic.strip_prefix(topic_prefix).unwrap_or(&raw.topic);
    let mut copy_headers = raw.headers.clone();
    copy_headers.extend([
        (headers::ERROR.to_owned(), error.to_owned()),
        (headers::REASON.to_owned(), reason.to_owned()),
        (headers::ORIGINAL_TOPIC.to_owned(), raw.topic.clone()),
        (
            headers::ORIGINAL_PARTITION.to_owned(),
            raw.partition.to_string(),
        ),
        (headers::ORIGINAL_OFFSET.to_owned(), raw.offset.to_string()),
        (headers::ATTEMPTS.to_owned(), attempts.to_string()),
        (headers::CONSUMER_GROUP.to_owned(), group.to_owned()),
    ]);
    let copy = OutboxRecord {
        event_id: Uuid::now_v7(),
        topic: format!("{logical_topic}.dlq"),
        key: raw.key.clone().unwrap_or_default(),
        event_type: raw
            .header(events::metadata::headers::EVENT_TYPE)
            .unwrap_or("unknown")
            .to_owned(),
        format: PayloadFormat::Raw,
        payload: raw.payload.clone().unwrap_or_default(),
        headers: copy_headers,
    };
    outbox::insert(tx, &copy)
        .await
        .map_err(|error| match error {
            outbox::OutboxError::Database(error) => error,
            other => sqlx::Error::Protocol(other.to_string()),
        })?;
    metrics::counter!("consumer_dead_lettered_total", "reason" => reason.to_owned()).increment(1);
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ParkedMessage {
    id: i64,
    partition: i32,
    offset: i64,
    payload: Option<Vec<u8>>,
    headers: sqlx::types::Json<Vec<(String, String)>>,
}

/// Replays, in order, the parked messages of every key whose redrive was requested.
pub(crate) async fn redrive_requested<H: EventHandler>(
    consumer: &IdempotentConsumer<H>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    // One statement: the keys to redrive, and how many keys are parked, for the
    // `consumer_parked_keys` gauge (alerts and dashboards; every round, so it falls with redrives).
    let (parked, topics, keys): (i64, Option<Vec<String>>, Option<Vec<String>>) =
        sqlx::query_as(
            "SELECT count(*),
                    array_agg(topic ORDER BY parked_at) FILTER (WHERE redrive_requested_at IS NOT NULL),
                    array_agg(message_key ORDER BY parked_at) FILTER (WHERE redrive_requested_at IS NOT NULL)
               FROM messaging_parked_keys",
        )
        .fetch_one(consumer.pool())
        .await?;
    metrics::gauge!("consumer_parked_keys").set(parked as f64);
    let keys = topics
        .unwrap_or_default()
        .into_iter()
        .zip(keys.unwrap_or_default());
    for (topic, key) in keys {
        if shutdown.is_cancelled() {
            break;
        }
        redrive_key(consumer, &topic, &key).await?;
    }
    Ok(())
}

async fn redrive_key<H: EventHandler>(
    consumer: &IdempotentConsumer<H>,
    topic: &str,
    key: &str,
) -> anyhow::Result<()> {
    let pool = consumer.pool();
    let mut replayed = 0_u64;
    loop {
        let head: Option<ParkedMessage> = sqlx::query_as(
            "SELECT id, partition, \"offset\", payload, headers FROM messaging_parked_messages
              WHERE topic = $1 AND message_key = $2 ORDER BY id LIMIT 1",
        )
        .bind(topic)
        .bind(key)
        .fetch_optional(pool)
        .await?;
        let Some(head) = head else {
            sqlx::query("DELETE FROM messaging_parked_keys WHERE topic = $1 AND message_key = $2")
                .bind(topic)
                .bind(key)
                .execute(pool)
                .await?;
            tracing::info!(topic, key, replayed, "parked key released");
            metrics::counter!("consumer_redriven_total").increment(replayed);
            return Ok(());
        };
        let raw = Record {
            topic: topic.to_owned(),
            partition: head.partition,
            offset: head.offset,
            timestamp_ms: None,
            key: Some(key.to_owned()),
            payload: head.payload,
            headers: head.headers.0,
        };
        // Decoding may call the registry, so it happens before the transaction.
        let received = match consumer.decode(&raw).await {
            Ok(received) => received,
            Err(Failure::Transient(reason)) => {
                anyhow::bail!("redrive of {topic}/{key} paused: {reason}")
            }
            Err(Failure::Permanent(reason)) => {
                return stop_redrive(pool, topic, key, &reason).await;
            }
        };
        let mut tx = pool.begin().await?;
        let still_head: Option<(i64,)> = sqlx::query_as(
            "SELECT m.id FROM messaging_parked_keys k
               JOIN messaging_parked_messages m ON m.topic = k.topic AND m.message_key = k.message_key
              WHERE k.topic = $1 AND k.message_key = $2
              ORDER BY m.id LIMIT 1 FOR UPDATE OF k",
        )
        .bind(topic)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        if still_head.map(|(id,)| id) != Some(head.id) {
            continue;
        }
        let new = record_in_inbox(&mut tx, &[&received]).await?;
        if !new.is_empty() {
            match consumer.handler().handle(&mut tx, &[&received]).await {
                Ok(()) => {}
                Err(HandlerError::Transient(error))
                    if !crate::consumer::refused_by_the_database(&error) =>
                {
                    anyhow::bail!("redrive of {topic}/{key} paused: {error:#}")
                }
                // A row the database refuses is refused on every round.
                Err(HandlerError::Transient(error) | HandlerError::Rejected(error)) => {
                    drop(tx);
                    return stop_redrive(
                        pool,
                        topic,
                        key,
                        &format!("handler rejected the event: {error:#}"),
                    )
                    .await;
                }
            }
        }
        sqlx::query("DELETE FROM messaging_parked_messages WHERE id = $1")
            .bind(head.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        replayed += 1;
    }
}

/// The head message still fails: keep the key parked with the new error, and stop replaying it.
async fn stop_redrive(pool: &PgPool, topic: &str, key: &str, error: &str) -> anyhow::Result<()> {
    tracing::error!(
        topic,
        key,
        error,
        "redrive stopped: the first parked message still fails"
    );
    sqlx::query(
        "UPDATE messaging_parked_keys SET error = $3, redrive_requested_at = NULL
          WHERE topic = $1 AND message_key = $2",
    )
    .bind(topic)
    .bind(key)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}
