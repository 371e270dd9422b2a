//! The idempotent consumer: at-least-once delivery from Kafka, exactly-once effects in the
//! service database.
//!
//! Per message: decode (outside any transaction), then in one transaction record the event id in
//! the inbox (a duplicate is skipped), run the handler (which may append outbox events), commit,
//! and only then store the offset. Transient failures retry with backoff; a message that can
//! never succeed is dead-lettered and its key parked (see [`crate::dead_letter`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use events::{Event, EventMetadata};
use futures::StreamExt;
use platform::config::KafkaSettings;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Statistics};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::client::{BrokerWatch, STRANDED_AFTER, UNSETTLED_AFTER};
use crate::dead_letter;
use crate::fault::{self, CrashPoint};
use crate::registry::{RegistryError, SchemaRegistryClient};
use crate::relay::Backoff;

/// What a handler reports when it cannot apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying: a database or dependency hiccup. The transaction is rolled back and the
    /// event delivered again after a backoff.
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// Will never succeed as it is: the event is dead-lettered and its key parked.
    #[error("rejected: {0:#}")]
    Rejected(anyhow::Error),
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        Self::Transient(error.into())
    }
}

impl From<crate::outbox::OutboxError> for HandlerError {
    fn from(error: crate::outbox::OutboxError) -> Self {
        match error {
            crate::outbox::OutboxError::Database(error) => Self::Transient(error.into()),
            other => Self::Rejected(other.into()),
        }
    }
}

/// An event as a handler sees it.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    pub event: Event,
    pub metadata: EventMetadata,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
}

/// A service's reaction to events. It runs inside the transaction that also records the event
/// in the inbox; everything it writes (including outbox events) commits or rolls back with it.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(
        &self,
        tx: &mut PgConnection,
        event: &ReceivedEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Logical topics to consume (the deployment prefix is added).
    pub topics: Vec<String>,
    /// Give up retrying a transient failure after this many attempts and dead-letter the
    /// message; `None` retries until shutdown (a stalled partition is visible in metrics).
    pub max_transient_attempts: Option<u32>,
    /// How often to look for parked keys whose redrive was requested.
    pub redrive_poll_interval: Duration,
    pub session_timeout: Duration,
}

impl ConsumerSettings {
    pub fn for_topics(topics: &[&str]) -> Self {
        Self {
            topics: topics.iter().map(|topic| (*topic).to_owned()).collect(),
            max_transient_attempts: None,
            redrive_poll_interval: Duration::from_secs(1),
            session_timeout: Duration::from_secs(10),
        }
    }
}

/// Publishes consumer lag from librdkafka's statistics as a gauge per partition, and tells the
/// consumer when its client has lost every broker.
#[derive(Debug, Default)]
pub struct LagReporter {
    pub brokers: BrokerWatch,
}

impl ClientContext for LagReporter {
    fn stats(&self, statistics: Statistics) {
        self.brokers.observe(&statistics);
        for (topic, stats) in &statistics.topics {
            for (partition, partition_stats) in &stats.partitions {
                if *partition >= 0 && partition_stats.consumer_lag >= 0 {
                    metrics::gauge!("consumer_lag", "topic" => topic.clone(), "partition" => partition.to_string())
                        .set(partition_stats.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for LagReporter {}

/// librdkafka settings of a saga consumer.
pub fn consumer_config(
    kafka: &KafkaSettings,
    settings: &ConsumerSettings,
) -> rdkafka::ClientConfig {
    let mut config = crate::client::base_config(kafka);
    config
        .set("group.id", &kafka.group_id)
        // A new group starts from the beginning: saga consumers must not skip history.
        .set("auto.offset.reset", "earliest")
        // Offsets are stored by hand once the handler's transaction committed, and committed
        // in the background by librdkafka (never a synchronous commit on a tokio worker).
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "500")
        .set(
            "session.timeout.ms",
            settings.session_timeout.as_millis().to_string(),
        )
        .set("fetch.wait.max.ms", "10")
        .set("statistics.interval.ms", "5000");
    config
}

/// Why consuming with one client ended.
enum Ended {
    Shutdown,
    /// The client has had no broker for [`STRANDED_AFTER`], or no settled group membership for
    /// [`UNSETTLED_AFTER`].
    Stranded,
}

/// Outcome of one message, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Applied,
    Duplicate,
    Parked,
    DeadLettered,
}

/// A message's bytes, detached from the consumer so it can be retried and parked.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
}

impl RawMessage {
    fn from_kafka(message: &BorrowedMessage<'_>) -> Self {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| {
                        let value = header
                            .value
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default();
                        (header.key.to_owned(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .map(|key| String::from_utf8_lossy(key).into_owned()),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Why a message failed, and whether trying again could help.
#[derive(Debug)]
pub(crate) enum Failure {
    Transient(String),
    Permanent(String),
}

/// Runs one handler over a set of topics in the service's consumer group.
pub struct IdempotentConsumer<H> {
    service: &'static str,
    pool: PgPool,
    kafka: KafkaSettings,
    settings: ConsumerSettings,
    handler: Arc<H>,
    registry: SchemaRegistryClient,
    exit_after_commit: CrashPoint,
}

impl<H> std::fmt::Debug for IdempotentConsumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotentConsumer")
            .field("service", &self.service)
            .field("topics", &self.settings.topics)
            .finish_non_exhaustive()
    }
}

impl<H: EventHandler> IdempotentConsumer<H> {
    pub fn new(
        service: &'static str,
        pool: PgPool,
        kafka: KafkaSettings,
        settings: ConsumerSettings,
        handler: H,
    ) -> Self {
        let registry = SchemaRegistryClient::new(&kafka.schema_registry_url);
        Self {
            service,
            pool,
            kafka,
            settings,
            handler: Arc::new(handler),
            registry,
            exit_after_commit: CrashPoint::from_env(
                fault::CONSUMER_EXIT_AFTER_COMMIT,
                fault::CONSUMER_EXIT_CODE,
            ),
        }
    }

    /// Consumes until `shutdown`, then stops fetching, finishes the in-flight message and
    /// commits the stored offsets. A client that librdkafka leaves without any broker (see
    /// [`BrokerWatch`]) is replaced by a new one, which rejoins the group.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut redrive_timer = tokio::time::interval(self.settings.redrive_poll_interval);
        redrive_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let brokers = BrokerWatch::default();
            let consumer = Arc::new(self.subscribe(&brokers)?);
            match self
                .consume(&consumer, &brokers, &mut redrive_timer, &shutdown)
                .await?
            {
                Ended::Shutdown => {
                    let committing = consumer.clone();
                    let committed = tokio::task::spawn_blocking(move || {
                        committing.commit_consumer_state(CommitMode::Sync)
                    })
                    .await?;
                    if let Err(error) = committed {
                        // NoOffset: nothing was consumed since the last automatic commit.
                        tracing::debug!(%error, "final offset commit");
                    }
                    tokio::task::spawn_blocking(move || drop(consumer)).await?;
                    break;
                }
                Ended::Stranded => {
                    tracing::error!(
                        service = self.service,
                        without_broker_for = ?brokers.stranded_for(),
                        group_unsettled_for = ?brokers.unsettled_for(),
                        "the Kafka client is stuck (no broker, or a group it never rejoins); replacing it"
                    );
                    metrics::counter!("consumer_clients_replaced_total").increment(1);
                    // Closing it waits for a group coordinator it will never reach: let a
                    // thread of its own wait, rather than this task. What it had consumed
                    // without committing comes again to the new client, and the inbox drops it.
                    std::thread::spawn(move || drop(consumer));
                }
            }
        }
        tracing::info!(service = self.service, "consumer stopped");
        Ok(())
    }

    fn subscribe(&self, brokers: &BrokerWatch) -> anyhow::Result<StreamConsumer<LagReporter>> {
        let consumer: StreamConsumer<LagReporter> = consumer_config(&self.kafka, &self.settings)
            .create_with_context(LagReporter {
                brokers: brokers.clone(),
            })?;
        let topics: Vec<String> = self
            .settings
            .topics
            .iter()
            .map(|t| self.kafka.topic(t))
            .collect();
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topic_refs)?;
        tracing::info!(service = self.service, topics = ?topics, group = %self.kafka.group_id, "consumer started");
        Ok(consumer)
    }

    async fn consume(
        &self,
        consumer: &StreamConsumer<LagReporter>,
        brokers: &BrokerWatch,
        redrive_timer: &mut tokio::time::Interval,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Ended> {
        let mut stream = consumer.stream();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(Ended::Shutdown),
                _ = redrive_timer.tick() => {
                    if brokers.stranded_for() >= STRANDED_AFTER
                        || brokers.unsettled_for() >= UNSETTLED_AFTER
                    {
                        return Ok(Ended::Stranded);
                    }
                    if let Err(error) = dead_letter::redrive_requested(self, shutdown).await {
                        tracing::warn!(error = %format!("{error:#}"), "redrive round failed");
                    }
                }
                next = stream.next() => {
                    let Some(next) = next else { return Ok(Ended::Shutdown) };
                    let message = match next {
                        Ok(message) => message,
                        Err(error) => {
                            tracing::warn!(%error, "kafka consume error");
                            continue;
                        }
                    };
                    let raw = RawMessage::from_kafka(&message);
                    match self.process(&raw, shutdown).await {
                        Some(outcome) => {
                            metrics::counter!("consumer_messages_total", "outcome" => format!("{outcome:?}").to_lowercase()).increment(1);
                            // The window a consumer crash leaves: committed, not yet stored.
                            if outcome != Handled::Duplicate {
                                self.exit_after_commit.maybe_exit();
                            }
                            consumer.store_offset_from_message(&message)?;
                        }
                        // Shutdown interrupted a retry: the offset stays unstored, and the
                        // message is delivered again after restart.
                        None => return Ok(Ended::Shutdown),
                    }
                }
            }
        }
    }

    /// Handles one message to completion: applied, skipped, parked, or dead-lettered. `None`
    /// only when shutdown interrupted the retries.
    pub(crate) async fn process(
        &self,
        raw: &RawMessage,
        shutdown: &CancellationToken,
    ) -> Option<Handled> {
        let mut backoff = Backoff::default();
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            let span = tracing::info_span!(
                "handle_event",
                service = self.service,
                topic = %raw.topic,
                partition = raw.partition,
                offset = raw.offset,
                event_type = raw.header(events::metadata::headers::EVENT_TYPE).unwrap_or("?"),
                event_id = raw.header(events::metadata::headers::EVENT_ID).unwrap_or("?"),
                trace_id = tracing::field::Empty,
                parent_span_id = tracing::field::Empty,
                attempt = attempts,
            );
            let failure = match self.try_once(raw).instrument(span.clone()).await {
                Ok(outcome) => return Some(outcome),
                Err(failure) => failure,
            };
            let permanent = match failure {
                Failure::Permanent(reason) => reason,
                Failure::Transient(reason)
                    if self
                        .settings
                        .max_transient_attempts
                        .is_some_and(|max| attempts >= max) =>
                {
                    format!("gave up after {attempts} attempts: {reason}")
                }
                Failure::Transient(reason) => {
                    span.in_scope(
                        || tracing::warn!(%reason, attempts, "transient failure; retrying"),
                    );
                    metrics::counter!("consumer_retries_total").increment(1);
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(backoff.next()) => continue,
                    }
                }
            };
            span.in_scope(|| tracing::error!(reason = %permanent, "message can never succeed; dead-lettering it"));
            // Parking must not be lost either: retry the database write until it lands.
            loop {
                match dead_letter::park(
                    &self.pool,
                    &self.kafka.group_id,
                    &self.kafka.topic_prefix,
                    raw,
                    &permanent,
                    attempts,
                )
                .await
                {
                    Ok(()) => return Some(Handled::DeadLettered),
                    Err(error) => {
                        tracing::warn!(%error, "cannot park the message yet; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => return None,
                            () = tokio::time::sleep(backoff.next()) => {}
                        }
                    }
                }
            }
        }
    }

    async fn try_once(&self, raw: &RawMessage) -> Result<Handled, Failure> {
        let key = raw.key.clone().unwrap_or_default();
        // Decoding may call the registry: do it before taking a database connection.
        let decoded = self.decode(raw).await;
        if let Err(Failure::Transient(reason)) = &decoded {
            return Err(Failure::Transient(reason.clone()));
        }

        let mut tx = self.pool.begin().await.map_err(transient)?;
        if dead_letter::is_parked(&mut tx, &raw.topic, &key)
            .await
            .map_err(transient)?
        {
            dead_letter::park_behind(&mut tx, &self.kafka.group_id, &self.kafka.topic_prefix, raw)
                .await
                .map_err(transient)?;
            tx.commit().await.map_err(transient)?;
            tracing::info!("key is parked; message parked behind it");
            metrics::counter!("consumer_parked_total").increment(1);
            return Ok(Handled::Parked);
        }
        let received = decoded?;
        tracing::Span::current()
            .record("trace_id", received.metadata.traceparent.trace_id_hex())
            .record(
                "parent_span_id",
                format!("{:016x}", received.metadata.traceparent.span_id),
            );
        let inserted = sqlx::query(
            "INSERT INTO messaging_inbox (event_id, topic, partition, \"offset\", event_type)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(received.metadata.event_id)
        .bind(&raw.topic)
        .bind(raw.partition)
        .bind(raw.offset)
        .bind(received.event.type_name())
        .execute(&mut *tx)
        .await
        .map_err(transient)?
        .rows_affected();
        if inserted == 0 {
            tracing::debug!("already handled; skipping");
            return Ok(Handled::Duplicate);
        }
        match self.handler.handle(&mut tx, &received).await {
            Ok(()) => {
                tx.commit().await.map_err(transient)?;
                tracing::debug!("handled");
                Ok(Handled::Applied)
            }
            Err(HandlerError::Transient(error)) => Err(Failure::Transient(format!("{error:#}"))),
            Err(HandlerError::Rejected(error)) => Err(Failure::Permanent(format!(
                "handler rejected the event: {error:#}"
            ))),
        }
    }

    /// Turns bytes and headers into an event. Registry outages are transient; anything wrong
    /// with the message itself is permanent.
    pub(crate) async fn decode(&self, raw: &RawMessage) -> Result<ReceivedEvent, Failure> {
        let metadata = EventMetadata::from_headers(|name| raw.header(name))
            .map_err(|error| Failure::Permanent(format!("bad metadata: {error}")))?;
        let payload = raw
            .payload
            .as_deref()
            .ok_or_else(|| Failure::Permanent("message has no payload".into()))?;
        let (schema_id, datum) = events::wire::unframe(payload).map_err(|error| {
            Failure::Permanent(format!("not the Confluent wire format: {error}"))
        })?;
        let writer = self
            .registry
            .schema(schema_id)
            .await
            .map_err(|error| match error {
                RegistryError::Unavailable(_) => Failure::Transient(error.to_string()),
                other => Failure::Permanent(other.to_string()),
            })?;
        let event = events::decode(&writer, datum)
            .map_err(|error| Failure::Permanent(format!("cannot decode: {error}")))?;
        Ok(ReceivedEvent {
            event,
            metadata,
            topic: raw.topic.clone(),
            partition: raw.partition,
            offset: raw.offset,
            key: raw.key.clone().unwrap_or_default(),
        })
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn handler(&self) -> &H {
        &self.handler
    }
}

fn transient(error: sqlx::Error) -> Failure {
    Failure::Transient(format!("database: {error}"))
}
