//! The outbox relay: publishes outbox rows to Kafka in commit order per key, and marks a row
//! published only after Kafka acknowledged it.
//!
//! - One relay is active per service database (a session advisory lock); others stand by, so
//!   rows are never published by two producers racing each other.
//! - It wakes on the outbox's NOTIFY and polls as a fallback, so a lost notification delays a
//!   row by at most one poll interval.
//! - Pending rows are selected by `published_at IS NULL`, never by "id greater than the last one
//!   seen": a transaction that took a lower id but committed later is still picked up.
//! - No database connection is held while waiting for Kafka.
//! - Acknowledged rows are marked published by the statement that selects the next round's
//!   rows, or on their own when no round follows within [`MARK_WITHIN`]: under load a round
//!   costs one statement, not two. A crash in between publishes those rows again, as a crash
//!   between Kafka's acknowledgement and the mark always could; every inbox drops them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use platform::config::KafkaSettings;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::{ClientContext, Statistics};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::client::{BrokerWatch, STRANDED_AFTER};
use crate::fault::{self, CrashPoint};
use crate::outbox::PayloadFormat;
use crate::producer::DeliveryProducer;
use crate::registry::SchemaRegistryClient;
use crate::worker::next_notification;

/// Any value works: each service has its own database, and advisory locks are per database.
const RELAY_LOCK_KEY: i64 = 0x6261_7a61_6172; // "bazaar"
const NOTIFY_CHANNEL: &str = "messaging_outbox";
/// How long to wait before listening again after the outbox listener failed.
const LISTENER_RETRY: Duration = Duration::from_millis(500);
/// How long acknowledged rows may wait for the next round's statement to mark them before they
/// are marked on their own. Longer merges more marks at low rates; it is also how much a relay
/// crash or failover publishes twice.
pub const MARK_WITHIN: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Rows published per round trip.
    pub batch_size: i64,
    /// How long to wait for a NOTIFY before looking anyway.
    pub poll_interval: Duration,
    /// How long published rows are kept (for audits and `bazaar` tools) before being purged.
    pub retention: Duration,
    pub purge_interval: Duration,
    /// Time a producer may wait to batch messages. Each hop pays it, so it is kept small.
    pub linger: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            // NOTIFY wakes the relay at every commit, and a lost listening connection makes it
            // look at once (notifications sent meanwhile are gone): the poll is only a last
            // resort, and at 500 ms it was most of what an idle relay did.
            poll_interval: Duration::from_secs(5),
            retention: Duration::from_secs(7 * 24 * 3600),
            purge_interval: Duration::from_secs(60),
            // Messages that queue up while a request is in flight are still batched; waiting
            // for more only adds latency to every hop of the saga.
            linger: Duration::ZERO,
        }
    }
}

/// Whether a publish round marks its rows: with the next round's select, or by
/// [`Relay::mark_acknowledged`]. `No` exists for fault-injection tests: it behaves as a relay
/// that crashed after Kafka acknowledged the rows but before it could mark them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkPublished {
    Yes,
    No,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("schema registry: {0}")]
    Registry(#[from] crate::registry::RegistryError),
    #[error("outbox row {id} has an unknown topic or schema: {message}")]
    Schema { id: i64, message: String },
}

#[derive(Debug, sqlx::FromRow)]
struct PendingRow {
    id: i64,
    topic: String,
    message_key: String,
    payload_format: String,
    payload: Vec<u8>,
    headers: sqlx::types::Json<Vec<(String, String)>>,
    created_at: DateTime<Utc>,
}

/// The span of one row's publication, a child of the span that appended it (its traceparent).
fn publish_span(row: &PendingRow) -> tracing::Span {
    let span = tracing::info_span!(
        "relay_publish",
        topic = %row.topic,
        outbox_id = row.id,
        "otel.kind" = "producer"
    );
    if let Some(parent) = row
        .headers
        .0
        .iter()
        .find(|(name, _)| name == events::metadata::headers::TRACEPARENT)
        .and_then(|(_, value)| platform::telemetry::Remote::parse(value))
    {
        platform::telemetry::continue_trace(&span, parent);
    }
    span
}

/// The relay producer's client context: feeds the broker watch.
#[derive(Debug)]
pub struct RelayContext {
    brokers: BrokerWatch,
}

impl ClientContext for RelayContext {
    fn stats(&self, statistics: Statistics) {
        self.brokers.observe(&statistics);
    }
}

/// How a stretch as the active relay ended.
enum Active {
    /// Shutdown was requested; the lock's session is still open.
    Stopped(PgConnection),
    /// The lock (or what it needs) was lost; the relay competes for it again.
    SteppedDown(String),
}

/// Publishes one database's outbox.
pub struct Relay {
    /// The service's pool: the relay lock's session and the outbox listener come from it.
    pool: PgPool,
    outbox: OutboxSession,
    kafka: KafkaSettings,
    settings: RelaySettings,
    registry: SchemaRegistryClient,
    producer: Arc<DeliveryProducer<RelayContext>>,
    brokers: BrokerWatch,
    schema_ids: HashMap<String, u32>,
    service: &'static str,
    backlog_recorded_at: Option<Instant>,
    exit_after_ack: CrashPoint,
    /// Rows Kafka acknowledged that are not marked published yet.
    acknowledged: Vec<i64>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// librdkafka settings of the relay's producer.
pub fn producer_config(kafka: &KafkaSettings, linger: Duration) -> rdkafka::ClientConfig {
    let mut config = crate::client::base_config(kafka);
    config
        // Same partition for the same key as Java producers and Kafka's own tools.
        .set("partitioner", "murmur2_random")
        // librdkafka defaults to false, unlike the Java client. Idempotence implies acks=all
        // and keeps per-partition order across retries.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Never give up on a message: a failed message would let a later one of the same key
        // overtake it when the row is retried. An outage stalls the relay instead.
        .set("message.timeout.ms", "0")
        .set("linger.ms", linger.as_millis().to_string())
        .set("compression.type", "lz4");
    crate::tuning::apply(&mut config, crate::tuning::Role::Producer);
    config
}

impl Relay {
    pub fn new(
        service: &'static str,
        pool: PgPool,
        kafka: KafkaSettings,
        settings: RelaySettings,
    ) -> Result<Self, RelayError> {
        let brokers = BrokerWatch::default();
        let producer = Self::create_producer(&kafka, &settings, &brokers)?;
        let registry = SchemaRegistryClient::of(&kafka);
        let outbox = OutboxSession {
            session: platform::db::Session::beside(&pool, &outbox_session_name(service))
                .with_setting("synchronous_commit", "off"),
        };
        Ok(Self {
            pool,
            outbox,
            kafka,
            settings,
            registry,
            producer,
            brokers,
            schema_ids: HashMap::new(),
            service,
            backlog_recorded_at: None,
            exit_after_ack: CrashPoint::from_env(
                fault::RELAY_EXIT_AFTER_ACK,
                fault::RELAY_EXIT_CODE,
            ),
            acknowledged: Vec::new(),
        })
    }

    /// Runs until `shutdown`: waits to become the active relay, then publishes as rows appear.
    /// A relay whose lock session dies (the database restarted or failed over) steps down and
    /// competes for the lock again; it never stops for good while the service runs.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut lock = None;
        while let Some(connection) = self.become_active(&shutdown).await {
            let active = self.publish_while_active(connection, &shutdown).await;
            self.let_go_of_acknowledged().await;
            match active {
                Active::Stopped(connection) => {
                    lock = Some(connection);
                    break;
                }
                Active::SteppedDown(reason) => {
                    tracing::warn!(service = self.service, %reason, "outbox relay stepped down; competing for the lock again");
                    metrics::counter!("outbox_relay_step_downs_total").increment(1);
                }
            }
        }

        let producer = self.producer.clone();
        if let Err(error) =
            tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await?
        {
            tracing::warn!(%error, "producer not flushed; unacknowledged rows stay pending");
        }
        if let Some(lock) = lock
            && let Err(error) = lock.close().await
        {
            tracing::debug!(%error, "closing the relay lock's session");
        }
        self.outbox.session.close().await;
        tracing::info!(service = self.service, "outbox relay stopped");
        Ok(())
    }

    /// Waits until this relay holds the lock; `None` once shutdown is requested.
    async fn become_active(&self, shutdown: &CancellationToken) -> Option<PgConnection> {
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            match self.acquire_lock().await {
                Ok(Some(connection)) => return Some(connection),
                Ok(None) => tracing::debug!("another relay is active; standing by"),
                Err(error) => tracing::warn!(%error, "cannot take the relay lock; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Publishes while `lock`'s session holds the lock.
    async fn publish_while_active(
        &mut self,
        mut lock: PgConnection,
        shutdown: &CancellationToken,
    ) -> Active {
        let mut listener = match platform::db::listener(&self.pool).await {
            Ok(listener) => listener,
            Err(error) => return Active::SteppedDown(format!("cannot listen: {error}")),
        };
        if let Err(error) = listener.listen(NOTIFY_CHANNEL).await {
            return Active::SteppedDown(format!("cannot listen: {error}"));
        }
        tracing::info!(service = self.service, "outbox relay active");
        let mut last_purge = Instant::now();
        let mut backoff = Backoff::default();

        while !shutdown.is_cancelled() {
            // Cancelling mid-round is safe: unmarked rows are published again later, and the
            // inbox of each consumer drops the duplicates.
            // A stranded producer never acknowledges: the round would wait forever.
            let brokers = self.brokers.clone();
            let round = tokio::select! {
                () = shutdown.cancelled() => break,
                round = self.publish_pending(MarkPublished::Yes) => round,
                () = brokers.stranded(STRANDED_AFTER) => {
                    if let Err(error) = self.replace_producer() {
                        tracing::warn!(%error, "cannot create a new producer yet");
                        tokio::time::sleep(backoff.next()).await;
                    }
                    continue;
                }
            };
            let failed = match round {
                Ok(published) => {
                    backoff.reset();
                    if published as i64 == self.settings.batch_size {
                        continue;
                    }
                    false
                }
                Err(error) => {
                    tracing::warn!(%error, "publishing the outbox failed; retrying");
                    metrics::counter!("outbox_publish_errors_total").increment(1);
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff.next()) => {}
                    }
                    true
                }
            };
            let purge_due = last_purge.elapsed() >= self.settings.purge_interval;
            if purge_due {
                last_purge = Instant::now();
                if let Err(error) = self.purge().await {
                    tracing::warn!(%error, "purging published outbox rows failed");
                }
            }
            // The lock lives as long as its session; a dead session means another relay may be
            // active now, so this one must step down. A failed round is the likeliest sign of
            // a database restart, so it is checked then too, not only once a purge interval.
            if (purge_due || failed) && sqlx::query("SELECT 1").execute(&mut lock).await.is_err() {
                return Active::SteppedDown("lost the relay lock's database session".into());
            }
            if failed {
                continue;
            }
            if !self.acknowledged.is_empty() {
                // The next round's statement marks them, if a commit calls for one soon.
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    notification = next_notification(&mut listener) => {
                        woken(notification).await;
                        continue;
                    }
                    () = tokio::time::sleep(MARK_WITHIN) => {
                        if let Err(error) = self.mark_acknowledged().await {
                            tracing::warn!(%error, "marking published outbox rows failed; marking them with the next round");
                        }
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                notification = next_notification(&mut listener) => woken(notification).await,
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
        Active::Stopped(lock)
    }

    /// Marks the rows Kafka acknowledged that no round has marked yet.
    pub async fn mark_acknowledged(&mut self) -> Result<(), RelayError> {
        if !self.acknowledged.is_empty() {
            self.outbox.mark_published(&self.acknowledged).await?;
            self.acknowledged.clear();
        }
        Ok(())
    }

    /// Marks what is acknowledged before this relay stops being the active one, or forgets it
    /// when it cannot: those rows are then published again by whichever relay is active, and
    /// dropped by every inbox. Forgetting matters: a relay that becomes active again later
    /// must not mark rows that were made pending again meanwhile.
    async fn let_go_of_acknowledged(&mut self) {
        if let Err(error) = self.mark_acknowledged().await {
            tracing::warn!(%error, rows = self.acknowledged.len(), "acknowledged outbox rows left unmarked; they will be published again");
            self.acknowledged.clear();
        }
    }

    fn create_producer(
        kafka: &KafkaSettings,
        settings: &RelaySettings,
        brokers: &BrokerWatch,
    ) -> Result<Arc<DeliveryProducer<RelayContext>>, RelayError> {
        let mut config = producer_config(kafka, settings.linger);
        // Only read by the broker watch; a report every few seconds costs nothing.
        config.set("statistics.interval.ms", "5000");
        Ok(Arc::new(DeliveryProducer::create(
            &config,
            RelayContext {
                brokers: brokers.clone(),
            },
        )?))
    }

    /// Replaces a producer librdkafka has left without any broker (see [`BrokerWatch`]). The
    /// rows it had not had acknowledged are still pending and go out through the new one.
    fn replace_producer(&mut self) -> Result<(), RelayError> {
        tracing::error!(
            service = self.service,
            stranded_for = ?self.brokers.stranded_for(),
            "the relay's Kafka producer lost every broker and will not find one again; replacing it"
        );
        metrics::counter!("outbox_producers_replaced_total").increment(1);
        let brokers = BrokerWatch::default();
        let producer = Self::create_producer(&self.kafka, &self.settings, &brokers)?;
        let stranded = std::mem::replace(&mut self.producer, producer);
        self.brokers = brokers;
        // Dropping purges its queue and waits briefly for librdkafka: not on a tokio worker.
        tokio::task::spawn_blocking(move || drop(stranded));
        Ok(())
    }

    async fn acquire_lock(&self) -> Result<Option<PgConnection>, sqlx::Error> {
        let mut connection = self.pool.acquire().await?.detach();
        let (acquired,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(RELAY_LOCK_KEY)
            .fetch_one(&mut connection)
            .await?;
        Ok(acquired.then_some(connection))
    }

    /// Publishes up to one batch of pending rows and returns how many were acknowledged.
    pub async fn publish_pending(&mut self, mark: MarkPublished) -> Result<usize, RelayError> {
        let rows = self
            .outbox
            .mark_then_select(&self.acknowledged, self.settings.batch_size)
            .await?;
        self.acknowledged.clear();
        self.record_backlog().await;
        if rows.is_empty() {
            return Ok(0);
        }

        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let payload = match row.payload_format.as_str() {
                f if f == PayloadFormat::Avro.as_str() => {
                    let id = self.schema_id(row).await?;
                    events::wire::frame(id, &row.payload)
                }
                _ => row.payload.clone(),
            };
            let headers =
                row.headers
                    .0
                    .iter()
                    .fold(OwnedHeaders::new(), |headers, (name, value)| {
                        headers.insert(Header {
                            key: name,
                            value: Some(value.as_bytes()),
                        })
                    });
            let topic = self.kafka.topic(&row.topic);
            // Enqueued in id order, so each partition receives its rows in commit order.
            let delivery = self
                .producer
                .send(&topic, row.message_key.as_bytes(), &payload, headers)
                .map_err(RelayError::Kafka)?;
            // Spans exported: one per row, from enqueue to acknowledgement.
            let span = platform::telemetry::exporting().then(|| publish_span(row));
            deliveries.push((row.id, row.created_at, delivery, span));
        }

        let mut acknowledged = Vec::with_capacity(deliveries.len());
        let mut failure = None;
        for (id, created_at, delivery, _span) in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {
                    acknowledged.push(id);
                    let age = (Utc::now() - created_at).to_std().unwrap_or_default();
                    metrics::histogram!("outbox_publish_latency_seconds").record(age.as_secs_f64());
                }
                Ok(Err(error)) => {
                    failure.get_or_insert(RelayError::Kafka(error));
                }
                Err(_) => {
                    failure.get_or_insert(RelayError::Kafka(rdkafka::error::KafkaError::Canceled));
                }
            }
        }
        if mark == MarkPublished::Yes && !acknowledged.is_empty() {
            // The window a relay crash leaves: in Kafka, still pending here.
            self.exit_after_ack.maybe_exit();
            self.acknowledged.extend_from_slice(&acknowledged);
        }
        metrics::counter!("outbox_published_total").increment(acknowledged.len() as u64);
        match failure {
            Some(error) => Err(error),
            None => Ok(acknowledged.len()),
        }
    }

    async fn schema_id(&mut self, row: &PendingRow) -> Result<u32, RelayError> {
        if let Some(id) = self.schema_ids.get(&row.topic) {
            return Ok(*id);
        }
        let schema = events::topic_schema(&row.topic).map_err(|error| RelayError::Schema {
            id: row.id,
            message: error.to_string(),
        })?;
        let subject = format!("{}-value", self.kafka.topic(&row.topic));
        let id = self.registry.register(&subject, &schema.text).await?;
        self.schema_ids.insert(row.topic.clone(), id);
        Ok(id)
    }

    /// At most once a second: counting the backlog is not free, and it is only for dashboards.
    async fn record_backlog(&mut self) {
        if self
            .backlog_recorded_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.backlog_recorded_at = Some(Instant::now());
        if let Ok((count, oldest)) = self.outbox.backlog().await {
            metrics::gauge!("outbox_backlog").set(count as f64);
            metrics::gauge!("outbox_oldest_unpublished_age_seconds").set(oldest.unwrap_or(0.0));
        }
    }

    /// Deletes rows published longer ago than the retention period.
    pub async fn purge(&mut self) -> Result<u64, sqlx::Error> {
        let deleted = self.outbox.purge(self.settings.retention).await?;
        if deleted > 0 {
            tracing::info!(deleted, "purged published outbox rows");
        }
        Ok(deleted)
    }
}

/// What a wake-up of the outbox listener means for the loop.
async fn woken(notification: Result<Option<sqlx::postgres::PgNotification>, sqlx::Error>) {
    // Ok(None): the connection was lost and is re-established by the next call; the loop looks
    // at the outbox at once for what was committed meanwhile.
    if let Err(error) = notification {
        tracing::warn!(%error, "outbox listener failed; looking again shortly");
        tokio::time::sleep(LISTENER_RETRY).await;
    }
}

/// Exponential backoff from 100 ms to 10 s.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub(crate) fn next(&mut self) -> Duration {
        let delay = Duration::from_millis(100u64.saturating_mul(1 << self.attempt.min(7)));
        self.attempt = self.attempt.saturating_add(1);
        delay.min(Duration::from_secs(10))
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The `application_name` of a relay's outbox session, as `pg_stat_activity` shows it.
pub fn outbox_session_name(service: &str) -> String {
    format!("{service} outbox relay")
}

/// Where the relay reads, marks and purges rows: a session of its own whose commits do not wait
/// for their WAL flush (`synchronous_commit = off`). A mark lost to a crash of PostgreSQL leaves
/// its rows pending, to be published again and dropped as duplicates by every consumer's inbox,
/// exactly as a relay crash between Kafka's ack and the mark does; a lost purge is redone. The
/// marks were about a quarter of the commits a checkout flushed.
///
/// One session, not a pool of one: see [`platform::db::Session`].
struct OutboxSession {
    session: platform::db::Session,
}

impl OutboxSession {
    /// Marks `acknowledged` published and selects up to `batch_size` pending rows, in one
    /// statement. Its select sees the rows as they were before its update, hence the exclusion.
    async fn mark_then_select(
        &mut self,
        acknowledged: &[i64],
        batch_size: i64,
    ) -> Result<Vec<PendingRow>, sqlx::Error> {
        let connection = self.session.connection().await?;
        let result = sqlx::query_as(
            "WITH marked AS (
                 UPDATE messaging_outbox SET published_at = clock_timestamp()
                  WHERE id = ANY($2) AND published_at IS NULL
             )
             SELECT id, topic, message_key, payload_format, payload, headers, created_at
               FROM messaging_outbox
              WHERE published_at IS NULL AND id <> ALL($2)
              ORDER BY id
              LIMIT $1",
        )
        .bind(batch_size)
        .bind(acknowledged)
        .fetch_all(connection)
        .await;
        self.session.keep_if_ok(result)
    }

    async fn mark_published(&mut self, ids: &[i64]) -> Result<(), sqlx::Error> {
        let connection = self.session.connection().await?;
        let result = sqlx::query(
            "UPDATE messaging_outbox SET published_at = clock_timestamp() WHERE id = ANY($1)",
        )
        .bind(ids)
        .execute(connection)
        .await;
        self.session.keep_if_ok(result).map(drop)
    }

    /// How many rows are pending, and the age in seconds of the oldest.
    async fn backlog(&mut self) -> Result<(i64, Option<f64>), sqlx::Error> {
        let connection = self.session.connection().await?;
        let result = sqlx::query_as(
            "SELECT count(*), EXTRACT(EPOCH FROM clock_timestamp() - min(created_at))::float8
               FROM messaging_outbox WHERE published_at IS NULL",
        )
        .fetch_one(connection)
        .await;
        self.session.keep_if_ok(result)
    }

    /// Deletes rows published longer than `retention` ago; returns how many.
    async fn purge(&mut self, retention: Duration) -> Result<u64, sqlx::Error> {
        let connection = self.session.connection().await?;
        // Through the index of published rows, reading only those it deletes. The cutoff is
        // written into the statement: `clock_timestamp()` (volatile) cannot bound an index scan,
        // and the purge read the whole outbox every minute (26,000 pages, 26 s of a slow disk,
        // for inventory's after 5 hours of benchmarks, to delete nothing); a bound retention
        // would leave a generic plan (`database.plan_cache_mode`) guessing at a third of the table.
        let result = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM messaging_outbox
              WHERE published_at < now() - make_interval(secs => {})",
            retention.as_secs()
        )))
        .execute(connection)
        .await;
        self.session
            .keep_if_ok(result)
            .map(|done| done.rows_affected())
    }
}
