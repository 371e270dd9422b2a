//! The idempotent consumer: at-least-once delivery from Kafka, exactly-once effects in the
//! service database.
//!
//! What one fetch brings is handled per partition, in offset order, and the partitions side by
//! side. A partition's batch is decoded outside any transaction, then handled in one
//! transaction: the event ids go into the inbox (duplicates are skipped), the handler runs for
//! each new event in order (appending outbox events), the transaction commits, and only then
//! is the partition's offset stored. Committing once per batch instead of once per message is
//! what makes a busy consumer cheap; a quiet one handles batches of one.
//!
//! If anything in a batch fails, the batch is rolled back and handled again one message at a
//! time, each in its own transaction, exactly as a batch of one: transient failures retry with
//! backoff, and a message that can never succeed is dead-lettered and its key parked (see
//! [`crate::dead_letter`]) while the others are applied.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use events::{Event, EventMetadata};
use futures::{FutureExt, StreamExt};
use platform::config::KafkaSettings;
use platform::db::Sessions;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::{ClientContext, Statistics};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::client::{BrokerWatch, STRANDED_AFTER, UNSETTLED_AFTER};
use crate::dead_letter;
use crate::fault::{self, CrashPoint};
use crate::record::{PayloadError, Record, RecordDecoder};
use crate::relay::Backoff;
use crate::worker::Wakeups;

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

impl HandlerError {
    /// A service's own error: worth retrying when a database failure that could pass next time
    /// lies behind it anywhere in its chain of sources, a rejection otherwise (also when the
    /// database refused the data itself: SQLSTATE classes 22 and 23). A service error keeps
    /// its database cause as a source (`#[from]` or `#[source]`, not `#[error(transparent)]`,
    /// which hides it) for this to see it.
    pub fn classify<E>(error: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let error = anyhow::Error::new(error);
        if refused_by_the_database(&error) {
            Self::Rejected(error)
        } else if error.chain().any(|cause| cause.is::<sqlx::Error>()) {
            Self::Transient(error)
        } else {
            Self::Rejected(error)
        }
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        if is_deterministic(&error) {
            Self::Rejected(error.into())
        } else {
            Self::Transient(error.into())
        }
    }
}

/// How often the consumer asks its [`BrokerWatch`] whether its client is stuck; no I/O.
const BROKER_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// SQLSTATE classes of errors the same statement on the same data meets every time: 22, data
/// exception (a value out of range, text PostgreSQL cannot store), and 23, integrity constraint
/// violation (CHECK, NOT NULL, foreign key, unique). Retrying such a row would stall its
/// partition forever; everything else (connections, serialization failures, deadlocks, lock
/// timeouts, a table being migrated) may pass on a later try.
const DETERMINISTIC_SQLSTATE_CLASSES: [&str; 2] = ["22", "23"];

/// Whether PostgreSQL refused the data itself ([`DETERMINISTIC_SQLSTATE_CLASSES`]).
fn is_deterministic(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(sqlx::error::DatabaseError::code)
        .is_some_and(|code| is_deterministic_sqlstate(&code))
}

fn is_deterministic_sqlstate(code: &str) -> bool {
    DETERMINISTIC_SQLSTATE_CLASSES
        .iter()
        .any(|class| code.starts_with(class))
}

/// Whether a database error the data itself caused lies anywhere in `error`'s chain.
pub(crate) fn refused_by_the_database(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<sqlx::Error>())
        .any(is_deterministic)
}

impl From<crate::outbox::OutboxError> for HandlerError {
    fn from(error: crate::outbox::OutboxError) -> Self {
        Self::classify(error)
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
    /// Handles `events`, new events of one partition in their order, in the caller's
    /// transaction: a whole batch, or one event when the consumer handles a failed batch's
    /// events one at a time, which isolates the one at fault. A handler loads and saves the
    /// rows of all of them with a statement each, so that a batch costs the same few round
    /// trips whatever its size: a consumer that fell behind then catches up with larger
    /// batches instead of falling further behind. It locks, in one fixed order, every row the
    /// batch locks: batches of different partitions (and instances) run side by side, two that
    /// lock the same rows in different orders deadlock, and PostgreSQL breaks the tie only
    /// after `deadlock_timeout` (1 s).
    fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[&ReceivedEvent],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Whether [`handle`](Self::handle) does anything with `event`. A consumed topic carries
    /// event types a service has no use for; they are passed over without a transaction (nothing
    /// in the inbox, nothing parked behind a parked key: they change nothing either way). All
    /// by default.
    fn handles(&self, event: &Event) -> bool {
        let _ = event;
        true
    }
}

/// Transient failures of one message before it is dead-lettered: with the backoff capped at
/// 10 s, about 16 minutes of retries, longer than a database restart or failover takes.
pub const DEFAULT_MAX_TRANSIENT_ATTEMPTS: u32 = 100;

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Logical topics to consume (the deployment prefix is added).
    pub topics: Vec<String>,
    /// Give up retrying a transient failure after this many attempts and dead-letter the
    /// message; `None` retries until shutdown. While a message is being retried,
    /// `consumer_retrying_attempts{topic, partition}` shows how many times.
    pub max_transient_attempts: Option<u32>,
    /// How often to look for parked keys whose redrive was requested, besides when the table of
    /// parked keys announces a change (migration 0002): the fallback for a lost notification.
    pub redrive_poll_interval: Duration,
    pub session_timeout: Duration,
    /// Most messages taken from the client at once, and so most of one partition handled in
    /// one transaction.
    pub max_batch: usize,
    /// How many partitions' batches are handled at the same time, each on a connection of its
    /// own. One keeps a service's transactions from waiting on each other's row locks (stock
    /// rows every order touches, say), at the price of handling partitions in turn.
    pub concurrent_partitions: usize,
}

impl ConsumerSettings {
    pub fn for_topics(topics: &[&str]) -> Self {
        Self {
            topics: topics.iter().map(|topic| (*topic).to_owned()).collect(),
            max_transient_attempts: Some(DEFAULT_MAX_TRANSIENT_ATTEMPTS),
            redrive_poll_interval: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
            // Enough to spread a commit over a hundred events; few enough that a transaction
            // holds its row locks briefly, and that a failed batch re-does little.
            max_batch: 100,
            // Two keep both cores of a small machine busy while one batch waits on its commit;
            // each is a database session of the consumer's own (beside the service's pool).
            concurrent_partitions: 2,
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
        // A long poll: the broker answers a fetch as soon as one byte arrives (fetch.min.bytes
        // is 1), so waiting longer costs no latency, while an idle consumer asks twice a
        // second instead of a hundred times (a 10 ms wait kept an idle broker at 14 % of a core).
        .set("fetch.wait.max.ms", "500")
        .set("statistics.interval.ms", "5000");
    crate::tuning::apply(&mut config, crate::tuning::Role::Consumer);
    config
}

/// How far a partition's batch got.
#[derive(Debug, Default)]
struct BatchOutcome {
    /// How many of its messages, from the first, were handled and committed; fewer than all
    /// only when shutdown stopped it.
    handled: usize,
    /// Whether any was applied, parked or dead-lettered (not only skipped as a duplicate).
    changed_anything: bool,
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
    /// Handled before (the inbox has it).
    Duplicate,
    /// The service has no use for this event ([`EventHandler::handles`]).
    Ignored,
    Parked,
    DeadLettered,
}

impl Handled {
    /// Whether the service's database changed.
    fn changed_anything(self) -> bool {
        !matches!(self, Self::Duplicate | Self::Ignored)
    }
}

impl From<HandlerError> for Failure {
    fn from(error: HandlerError) -> Self {
        match error {
            // However the handler labelled it: a row the database refuses is refused every time.
            HandlerError::Transient(error) if refused_by_the_database(&error) => {
                Self::Permanent(format!("the database refused the event's data: {error:#}"))
            }
            HandlerError::Transient(error) => Self::Transient(format!("{error:#}")),
            HandlerError::Rejected(error) => {
                Self::Permanent(format!("handler rejected the event: {error:#}"))
            }
        }
    }
}

/// The `application_name` of a consumer's database sessions, as `pg_stat_activity` shows them.
pub fn consumer_session_name(service: &str) -> String {
    format!("{service} consumer")
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
    /// Where batches are handled, one session per partition handled at the same time; the
    /// rarer work (dead letters, redrives) takes connections from `pool`.
    sessions: Sessions,
    kafka: KafkaSettings,
    settings: ConsumerSettings,
    handler: Arc<H>,
    decoder: RecordDecoder,
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
        let decoder = RecordDecoder::new(crate::registry::SchemaRegistryClient::of(&kafka));
        Self {
            service,
            sessions: Sessions::beside(&pool, &consumer_session_name(service)),
            pool,
            kafka,
            settings,
            handler: Arc::new(handler),
            decoder,
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
        let mut parked_keys_changed = Wakeups::new(
            &self.pool,
            dead_letter::PARKED_KEYS_CHANNEL,
            self.settings.redrive_poll_interval,
        )
        .await;
        loop {
            let brokers = BrokerWatch::default();
            let consumer = Arc::new(self.subscribe(&brokers)?);
            match self
                .consume(&consumer, &brokers, &mut parked_keys_changed, &shutdown)
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
        self.sessions.close().await;
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
        parked_keys_changed: &mut Wakeups,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Ended> {
        let mut stream = consumer.stream();
        let mut broker_check = tokio::time::interval(BROKER_CHECK_INTERVAL);
        broker_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(Ended::Shutdown),
                _ = broker_check.tick() => {
                    if brokers.stranded_for() >= STRANDED_AFTER
                        || brokers.unsettled_for() >= UNSETTLED_AFTER
                    {
                        return Ok(Ended::Stranded);
                    }
                }
                () = parked_keys_changed.next(&self.pool) => {
                    if let Err(error) = dead_letter::redrive_requested(self, shutdown).await {
                        tracing::warn!(error = %format!("{error:#}"), "redrive round failed");
                    }
                }
                next = stream.next() => {
                    let Some(next) = next else { return Ok(Ended::Shutdown) };
                    let mut fetched = Vec::new();
                    match next {
                        Ok(message) => fetched.push(Record::from_kafka(&message)),
                        Err(error) => {
                            tracing::warn!(%error, "kafka consume error");
                            continue;
                        }
                    }
                    // What the client has already fetched joins the batch; nothing waits for more.
                    while fetched.len() < self.settings.max_batch {
                        match stream.next().now_or_never() {
                            Some(Some(Ok(message))) => fetched.push(Record::from_kafka(&message)),
                            Some(Some(Err(error))) => {
                                tracing::warn!(%error, "kafka consume error");
                                break;
                            }
                            Some(None) | None => break,
                        }
                    }
                    if !self.handle_fetched(consumer, fetched, shutdown).await {
                        // Shutdown interrupted a retry: that partition's offset stays unstored,
                        // and its messages are delivered again after restart.
                        return Ok(Ended::Shutdown);
                    }
                }
            }
        }
    }

    /// Handles what one fetch brought, each partition's messages in order, partitions side by
    /// side, and stores each partition's offset once its batch committed. `false` when shutdown
    /// interrupted a batch.
    async fn handle_fetched(
        &self,
        consumer: &StreamConsumer<LagReporter>,
        fetched: Vec<Record>,
        shutdown: &CancellationToken,
    ) -> bool {
        let batches = by_partition(fetched);
        let mut handled = futures::stream::iter(batches.into_iter().map(|batch| async move {
            let outcome = self.process_batch(&batch, shutdown).await;
            (batch, outcome)
        }))
        .buffer_unordered(self.settings.concurrent_partitions.max(1));
        let mut completed = true;
        while let Some((batch, outcome)) = handled.next().await {
            completed &= outcome.handled == batch.len();
            // The window a consumer crash leaves: committed, not yet stored.
            if outcome.changed_anything {
                self.exit_after_commit.maybe_exit();
            }
            let Some(last) = outcome.handled.checked_sub(1).map(|last| &batch[last]) else {
                continue;
            };
            if let Err(error) = consumer.store_offset(&last.topic, last.partition, last.offset) {
                // The partition was revoked meanwhile: its new owner gets these messages again
                // and its inbox drops them.
                tracing::info!(%error, topic = %last.topic, partition = last.partition, "offset not stored");
            }
        }
        completed
    }

    /// Handles one partition's batch: in one transaction when every message decodes and applies,
    /// otherwise one message at a time. Shutdown stops it between messages: a batch
    /// transaction is rolled back, one message at a time keeps what committed.
    async fn process_batch(&self, batch: &[Record], shutdown: &CancellationToken) -> BatchOutcome {
        metrics::histogram!("consumer_batch_size").record(batch.len() as f64);
        let mut decoded = Vec::with_capacity(batch.len());
        for record in batch {
            match self.decode(record).await {
                Ok(received) => decoded.push(received),
                Err(_) => break,
            }
        }
        // A batch of one takes the one-message path straight away: it is the same transaction.
        if batch.len() > 1 && decoded.len() == batch.len() {
            match self.try_batch(batch, &decoded, Some(shutdown)).await {
                Ok(outcomes) => {
                    for outcome in &outcomes {
                        count(*outcome);
                    }
                    return BatchOutcome {
                        handled: outcomes.len(),
                        changed_anything: outcomes.iter().any(|o| o.changed_anything()),
                    };
                }
                Err(failure) => {
                    tracing::debug!(
                        ?failure,
                        size = batch.len(),
                        "batch failed; handling it one message at a time"
                    );
                    metrics::counter!("consumer_batches_split_total").increment(1);
                }
            }
        }
        let mut outcome = BatchOutcome::default();
        for record in batch {
            if shutdown.is_cancelled() {
                break;
            }
            // `None`: shutdown interrupted its retries.
            let Some(handled) = self.process(record, shutdown).await else {
                break;
            };
            outcome.handled += 1;
            outcome.changed_anything |= handled.changed_anything();
        }
        outcome
    }

    /// One transaction for a partition's decoded batch: events the service has no use for are
    /// skipped without one; for the others, parked keys are looked up and the inbox written
    /// with one statement, then the handler runs for each new event in order. With
    /// `shutdown`, the batch stops between events (rolled back: it comes again).
    async fn try_batch(
        &self,
        batch: &[Record],
        decoded: &[ReceivedEvent],
        shutdown: Option<&CancellationToken>,
    ) -> Result<Vec<Handled>, Failure> {
        let wanted: Vec<bool> = decoded
            .iter()
            .map(|received| self.handler.handles(&received.event))
            .collect();
        let to_claim: Vec<&ReceivedEvent> = decoded
            .iter()
            .zip(&wanted)
            .filter_map(|(received, wanted)| wanted.then_some(received))
            .collect();
        if to_claim.is_empty() {
            return Ok(vec![Handled::Ignored; batch.len()]);
        }
        let mut session = self.sessions.take();
        let result = match session.connection().await {
            Ok(connection) => {
                self.apply_batch(connection, batch, decoded, &wanted, &to_claim, shutdown)
                    .await
            }
            Err(error) => Err(transient(error)),
        };
        session.keep_if_ok(result)
    }

    /// [`Self::try_batch`]'s transaction, on `connection`.
    async fn apply_batch(
        &self,
        connection: &mut PgConnection,
        batch: &[Record],
        decoded: &[ReceivedEvent],
        wanted: &[bool],
        to_claim: &[&ReceivedEvent],
        shutdown: Option<&CancellationToken>,
    ) -> Result<Vec<Handled>, Failure> {
        let mut tx = connection.begin().await.map_err(transient)?;
        let Claimed { parked, mut new } = claim(&mut tx, &batch[0].topic, to_claim)
            .await
            .map_err(transient)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut to_handle: Vec<(&Record, &ReceivedEvent)> = Vec::new();
        for ((record, received), &wanted) in batch.iter().zip(decoded).zip(wanted) {
            if !wanted {
                outcomes.push(Handled::Ignored);
                continue;
            }
            if parked.contains(&received.key) {
                dead_letter::park_behind(
                    &mut tx,
                    &self.kafka.group_id,
                    &self.kafka.topic_prefix,
                    record,
                )
                .await
                .map_err(transient)?;
                tracing::info!(
                    offset = record.offset,
                    "key is parked; message parked behind it"
                );
                metrics::counter!("consumer_parked_total").increment(1);
                outcomes.push(Handled::Parked);
                continue;
            }
            // A duplicate in the inbox, or a second copy within this very batch.
            if !new.remove(&received.metadata.event_id) {
                outcomes.push(Handled::Duplicate);
                continue;
            }
            to_handle.push((record, received));
            outcomes.push(Handled::Applied);
        }
        // The whole batch is in the inbox already, so it commits whole or not at all: on
        // shutdown it is rolled back and comes again after the restart.
        if shutdown.is_some_and(CancellationToken::is_cancelled) {
            return Ok(Vec::new());
        }
        if !to_handle.is_empty() {
            // One event keeps the span it has on its own; several share a span of the batch.
            let span = match to_handle.as_slice() {
                [(record, received)] => {
                    let span = self.span(record, 1);
                    record_trace(&span, received);
                    span
                }
                several => tracing::info_span!(
                    "handle_batch",
                    service = self.service,
                    topic = %batch[0].topic,
                    partition = batch[0].partition,
                    events = several.len(),
                ),
            };
            let events: Vec<&ReceivedEvent> =
                to_handle.iter().map(|(_, received)| *received).collect();
            self.handler
                .handle(&mut tx, &events)
                .instrument(span)
                .await
                .map_err(Failure::from)?;
        }
        tx.commit().await.map_err(transient)?;
        Ok(outcomes)
    }

    fn span(&self, record: &Record, attempt: u32) -> tracing::Span {
        tracing::info_span!(
            "handle_event",
            service = self.service,
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
            event_type = record.header(events::metadata::headers::EVENT_TYPE).unwrap_or("?"),
            event_id = record.header(events::metadata::headers::EVENT_ID).unwrap_or("?"),
            trace_id = tracing::field::Empty,
            parent_span_id = tracing::field::Empty,
            attempt,
        )
    }

    /// Handles one message to completion: applied, skipped, parked, or dead-lettered. `None`
    /// only when shutdown interrupted the retries.
    pub(crate) async fn process(
        &self,
        raw: &Record,
        shutdown: &CancellationToken,
    ) -> Option<Handled> {
        let mut backoff = Backoff::default();
        let mut attempts: u32 = 0;
        let mut retrying = RetryGauge::new(raw);
        loop {
            attempts += 1;
            let span = self.span(raw, attempts);
            let failure = match self.try_once(raw).instrument(span.clone()).await {
                Ok(outcome) => {
                    count(outcome);
                    return Some(outcome);
                }
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
                    let key = raw.key.as_deref().unwrap_or_default();
                    span.in_scope(
                        || tracing::warn!(%reason, key, attempts, "transient failure; retrying"),
                    );
                    metrics::counter!("consumer_retries_total").increment(1);
                    retrying.retrying(attempts);
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
                    Ok(()) => {
                        count(Handled::DeadLettered);
                        return Some(Handled::DeadLettered);
                    }
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

    async fn try_once(&self, raw: &Record) -> Result<Handled, Failure> {
        // Decoding may call the registry: do it before taking a database connection.
        match self.decode(raw).await {
            Ok(received) => {
                record_trace(&tracing::Span::current(), &received);
                let outcomes = self
                    .try_batch(
                        std::slice::from_ref(raw),
                        std::slice::from_ref(&received),
                        None,
                    )
                    .await?;
                Ok(outcomes[0])
            }
            Err(Failure::Transient(reason)) => Err(Failure::Transient(reason)),
            // An undecodable message of a parked key waits behind it, like any other.
            Err(failure) => {
                let key = raw.key.as_deref().unwrap_or_default();
                let mut tx = self.pool.begin().await.map_err(transient)?;
                if !dead_letter::is_parked(&mut tx, &raw.topic, key)
                    .await
                    .map_err(transient)?
                {
                    return Err(failure);
                }
                dead_letter::park_behind(
                    &mut tx,
                    &self.kafka.group_id,
                    &self.kafka.topic_prefix,
                    raw,
                )
                .await
                .map_err(transient)?;
                tx.commit().await.map_err(transient)?;
                tracing::info!("key is parked; message parked behind it");
                metrics::counter!("consumer_parked_total").increment(1);
                Ok(Handled::Parked)
            }
        }
    }

    /// Turns bytes and headers into an event. Registry outages are transient; anything wrong
    /// with the message itself is permanent.
    pub(crate) async fn decode(&self, raw: &Record) -> Result<ReceivedEvent, Failure> {
        let metadata = raw
            .metadata()
            .map_err(|error| Failure::Permanent(format!("bad metadata: {error}")))?;
        let event = self
            .decoder
            .payload(raw)
            .await
            .event
            .map_err(|error| match error {
                PayloadError::RegistryUnavailable { .. } => Failure::Transient(error.to_string()),
                PayloadError::NotAnEvent(reason) => Failure::Permanent(reason),
            })?;
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

/// A database error outside the handler (the inbox, the commit: a deferred constraint).
fn transient(error: sqlx::Error) -> Failure {
    if is_deterministic(&error) {
        Failure::Permanent(format!("the database refused the event's data: {error}"))
    } else {
        Failure::Transient(format!("database: {error}"))
    }
}

/// `consumer_retrying_attempts{topic, partition}`: how many times the message at the head of
/// a partition has failed transiently so far, while it is retried; back to 0 when it is
/// handled, dead-lettered or left for shutdown. A partition handles one key at a time, so the
/// gauge names the stalled partition; the retry warnings in the log name the key.
struct RetryGauge {
    gauge: metrics::Gauge,
    set: bool,
}

impl RetryGauge {
    fn new(record: &Record) -> Self {
        Self {
            gauge: metrics::gauge!(
                "consumer_retrying_attempts",
                "topic" => record.topic.clone(),
                "partition" => record.partition.to_string()
            ),
            set: false,
        }
    }

    fn retrying(&mut self, attempts: u32) {
        self.gauge.set(f64::from(attempts));
        self.set = true;
    }
}

impl Drop for RetryGauge {
    fn drop(&mut self) {
        if self.set {
            self.gauge.set(0.0);
        }
    }
}

fn count(outcome: Handled) {
    let outcome = match outcome {
        Handled::Applied => "applied",
        Handled::Duplicate => "duplicate",
        Handled::Ignored => "ignored",
        Handled::Parked => "parked",
        Handled::DeadLettered => "deadlettered",
    };
    metrics::counter!("consumer_messages_total", "outcome" => outcome).increment(1);
}

fn record_trace(span: &tracing::Span, received: &ReceivedEvent) {
    let trace = &received.metadata.traceparent;
    // With spans exported, the handling joins the event's trace (before the span is entered).
    platform::telemetry::continue_trace(
        span,
        platform::telemetry::Remote {
            trace_id: trace.trace_id,
            span_id: trace.span_id,
            sampled: trace.sampled,
        },
    );
    span.record("trace_id", received.metadata.traceparent.trace_id_hex())
        .record(
            "parent_span_id",
            format!("{:016x}", received.metadata.traceparent.span_id),
        );
}

/// Splits a fetch into per-partition batches, each in offset order.
fn by_partition(fetched: Vec<Record>) -> Vec<Vec<Record>> {
    let mut batches: Vec<Vec<Record>> = Vec::new();
    for record in fetched {
        match batches
            .iter_mut()
            .find(|batch| batch[0].topic == record.topic && batch[0].partition == record.partition)
        {
            Some(batch) => batch.push(record),
            None => batches.push(vec![record]),
        }
    }
    batches
}

/// What one statement found for a batch: which of its keys are parked, and which of the other
/// events were new to the inbox (and are now in it).
struct Claimed {
    parked: HashSet<String>,
    new: HashSet<Uuid>,
}

/// Looks up the parked keys among the events' (locking them, as [`dead_letter::is_parked`]
/// does) and records the events of the other keys in the inbox, in one round trip.
async fn claim(
    tx: &mut PgConnection,
    topic: &str,
    events: &[&ReceivedEvent],
) -> Result<Claimed, sqlx::Error> {
    let keys: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
    let ids: Vec<Uuid> = events.iter().map(|e| e.metadata.event_id).collect();
    let partitions: Vec<i32> = events.iter().map(|e| e.partition).collect();
    let offsets: Vec<i64> = events.iter().map(|e| e.offset).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event.type_name()).collect();
    let rows: Vec<(Option<String>, Option<Uuid>)> = sqlx::query_as(
        "WITH parked AS (
             SELECT message_key FROM messaging_parked_keys
              WHERE topic = $1 AND message_key = ANY($2) FOR UPDATE
         ), recorded AS (
             INSERT INTO messaging_inbox (event_id, topic, partition, \"offset\", event_type)
             SELECT e.event_id, $1, e.partition, e.position, e.event_type
               FROM unnest($2::text[], $3::uuid[], $4::int[], $5::bigint[], $6::text[])
                    AS e(message_key, event_id, partition, position, event_type)
              WHERE e.message_key NOT IN (SELECT message_key FROM parked)
             ON CONFLICT (event_id) DO NOTHING
             RETURNING event_id
         )
         SELECT message_key, NULL::uuid FROM parked
         UNION ALL
         SELECT NULL, event_id FROM recorded",
    )
    .bind(topic)
    .bind(&keys)
    .bind(&ids)
    .bind(&partitions)
    .bind(&offsets)
    .bind(&types)
    .fetch_all(&mut *tx)
    .await?;
    let mut claimed = Claimed {
        parked: HashSet::new(),
        new: HashSet::new(),
    };
    for row in rows {
        match row {
            (Some(key), _) => {
                claimed.parked.insert(key);
            }
            (None, Some(id)) => {
                claimed.new.insert(id);
            }
            (None, None) => {}
        }
    }
    Ok(claimed)
}

/// Records the events in the inbox with one statement and returns the ids that were new.
pub(crate) async fn record_in_inbox(
    tx: &mut PgConnection,
    events: &[&ReceivedEvent],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.metadata.event_id).collect();
    let topics: Vec<&str> = events.iter().map(|e| e.topic.as_str()).collect();
    let partitions: Vec<i32> = events.iter().map(|e| e.partition).collect();
    let offsets: Vec<i64> = events.iter().map(|e| e.offset).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event.type_name()).collect();
    let new: Vec<(Uuid,)> = sqlx::query_as(
        "INSERT INTO messaging_inbox (event_id, topic, partition, \"offset\", event_type)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::bigint[], $5::text[])
         ON CONFLICT (event_id) DO NOTHING
         RETURNING event_id",
    )
    .bind(&ids)
    .bind(&topics)
    .bind(&partitions)
    .bind(&offsets)
    .bind(&types)
    .fetch_all(&mut *tx)
    .await?;
    Ok(new.into_iter().map(|(id,)| id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum ServiceError {
        #[error("no such thing")]
        Unknown,
        #[error("database")]
        Database(#[from] sqlx::Error),
        #[error("outbox")]
        Outbox(#[from] crate::outbox::OutboxError),
    }

    #[test]
    fn data_and_integrity_errors_are_deterministic_and_others_not() {
        for code in [
            "22001", "22003", "22P02", "23502", "23503", "23505", "23514",
        ] {
            assert!(is_deterministic_sqlstate(code), "{code}");
        }
        // Serialization failure, deadlock, lock timeout, undefined table, connection failure.
        for code in ["40001", "40P01", "55P03", "42P01", "08006", "57P01"] {
            assert!(!is_deterministic_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn a_database_failure_behind_a_service_error_is_transient_and_anything_else_rejected() {
        let transient = |error: ServiceError| {
            matches!(HandlerError::classify(error), HandlerError::Transient(_))
        };
        assert!(transient(ServiceError::Database(sqlx::Error::PoolTimedOut)));
        assert!(transient(ServiceError::Outbox(
            crate::outbox::OutboxError::Database(sqlx::Error::PoolTimedOut)
        )));
        assert!(!transient(ServiceError::Unknown));
    }

    fn record(topic: &str, partition: i32, offset: i64) -> Record {
        Record {
            topic: topic.into(),
            partition,
            offset,
            timestamp_ms: None,
            key: None,
            payload: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_fetch_splits_into_partitions_each_in_offset_order() {
        let fetched = vec![
            record("a", 0, 1),
            record("a", 1, 5),
            record("b", 0, 9),
            record("a", 0, 2),
            record("a", 1, 6),
            record("a", 0, 3),
        ];
        let batches: Vec<Vec<(String, i32, i64)>> = by_partition(fetched)
            .into_iter()
            .map(|batch| {
                batch
                    .into_iter()
                    .map(|r| (r.topic, r.partition, r.offset))
                    .collect()
            })
            .collect();
        assert_eq!(
            batches,
            vec![
                vec![("a".into(), 0, 1), ("a".into(), 0, 2), ("a".into(), 0, 3)],
                vec![("a".into(), 1, 5), ("a".into(), 1, 6)],
                vec![("b".into(), 0, 9)],
            ]
        );
    }
}
