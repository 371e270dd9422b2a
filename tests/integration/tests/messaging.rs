//! The messaging runtime against the real broker, registry and database: exactly-once effects,
//! per-key order, dead letters with parking and redrive, rows the database refuses, retries of
//! transient failures, resumption from stored offsets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bazaar_integration_tests::{eventually, fresh_messaging_database, isolated_kafka, stop_task};
use events::{Event, EventMetadata, OrderCancelled, StockLevelChanged};
use futures::StreamExt;
use messaging::consumer::ConsumerSettings;
use messaging::outbox::Cause;
use messaging::relay::MarkPublished;
use messaging::{
    EventHandler, HandlerError, IdempotentConsumer, ReceivedEvent, Relay, RelaySettings,
};
use platform::config::KafkaSettings;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// A database with the runtime's tables and an `effects` table the test handler writes to,
/// plus topics of its own.
struct Fixture {
    pool: PgPool,
    kafka: KafkaSettings,
}

impl Fixture {
    async fn new(label: &str) -> Self {
        bazaar_integration_tests::init_test_logging();
        let (_, pool) = fresh_messaging_database(label).await.expect("database");
        sqlx::query(
            "CREATE TABLE effects (seq BIGSERIAL PRIMARY KEY, event_id UUID NOT NULL, key TEXT NOT NULL, value BIGINT NOT NULL)",
        )
        .execute(&pool)
        .await
        .expect("effects table");
        sqlx::query("CREATE TABLE fixed (fixed BOOLEAN NOT NULL)")
            .execute(&pool)
            .await
            .expect("fixed table");
        let kafka = isolated_kafka(label);
        messaging::topics::apply(
            &messaging::TopicCatalog::bundled().expect("catalog"),
            &kafka,
        )
        .await
        .expect("topics");
        Self { pool, kafka }
    }

    /// Appends `events` in one transaction and one statement, each starting a flow of its own.
    async fn append(&self, events: &[Event]) {
        let mut tx = self.pool.begin().await.expect("begin");
        messaging::outbox::publish_all(&mut tx, events, Cause::SERVICE)
            .await
            .expect("append");
        tx.commit().await.expect("commit");
    }

    fn relay(&self) -> Relay {
        Relay::new(
            "test",
            self.pool.clone(),
            self.kafka.clone(),
            RelaySettings::default(),
        )
        .expect("relay")
    }

    fn start_relay(
        &self,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(self.relay().run(shutdown.clone()));
        (shutdown, task)
    }

    fn start_consumer(
        &self,
        topics: &[&str],
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        self.start_consumer_with(topics, RecordingHandler)
    }

    fn start_consumer_with(
        &self,
        topics: &[&str],
        handler: impl EventHandler,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let shutdown = CancellationToken::new();
        let consumer = IdempotentConsumer::new(
            "test",
            self.pool.clone(),
            self.kafka.clone(),
            ConsumerSettings::for_topics(topics),
            handler,
        );
        let task = tokio::spawn(consumer.run(shutdown.clone()));
        (shutdown, task)
    }

    /// Renames the `effects` table away (`away`) or back: while it is away, every handled event
    /// fails with a transient error (42P01, undefined table), as during a botched migration.
    async fn move_effects_table(&self, away: bool) {
        let statement = if away {
            "ALTER TABLE effects RENAME TO effects_away"
        } else {
            "ALTER TABLE effects_away RENAME TO effects"
        };
        sqlx::query(statement)
            .execute(&self.pool)
            .await
            .expect("rename");
    }

    async fn effect_count(&self) -> i64 {
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM effects")
            .fetch_one(&self.pool)
            .await
            .expect("count");
        count
    }

    async fn wait_for_effects(&self, expected: i64, deadline: Duration) {
        eventually(&format!("{expected} effects"), deadline, || async {
            (self.effect_count().await >= expected).then_some(())
        })
        .await;
    }

    /// Messages of `key` parked (the one that failed and those behind it); `None` when the
    /// database cannot say right now.
    async fn parked_messages_of(&self, key: &str) -> Option<i64> {
        let (parked,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM messaging_parked_messages WHERE message_key = $1")
                .bind(key)
                .fetch_one(&self.pool)
                .await
                .ok()?;
        Some(parked)
    }

    async fn effects_of(&self, key: &str) -> Vec<i64> {
        sqlx::query_as::<sqlx::Postgres, (i64,)>(
            "SELECT value FROM effects WHERE key = $1 ORDER BY seq",
        )
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .expect("effects")
        .into_iter()
        .map(|(value,)| value)
        .collect()
    }
}

/// Records each event's value as an effect. An `OrderCancelled` with reason `poison` is
/// rejected until the `fixed` table has a row, like a bug fixed by a deploy.
struct RecordingHandler;

impl RecordingHandler {
    async fn record(
        &self,
        tx: &mut PgConnection,
        received: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let value = match &received.event {
            Event::StockLevelChanged(level) => level.on_hand,
            Event::OrderCancelled(cancelled) => {
                let fixed: Option<(bool,)> = sqlx::query_as("SELECT fixed FROM fixed LIMIT 1")
                    .fetch_optional(&mut *tx)
                    .await?;
                if cancelled.reason == "poison" && fixed.is_none() {
                    return Err(HandlerError::Rejected(anyhow::anyhow!(
                        "cannot cancel with reason poison"
                    )));
                }
                cancelled
                    .reason
                    .trim_start_matches("step-")
                    .parse()
                    .unwrap_or(-1)
            }
            _ => return Ok(()),
        };
        sqlx::query("INSERT INTO effects (event_id, key, value) VALUES ($1, $2, $3)")
            .bind(received.metadata.event_id)
            .bind(&received.key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

impl EventHandler for RecordingHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[&ReceivedEvent],
    ) -> Result<(), HandlerError> {
        for received in events {
            self.record(tx, received).await?;
        }
        Ok(())
    }
}

/// One event as [`RecordingHandler`] records it; several in one INSERT, refused whole when they
/// hold a poison. Remembers the size of every batch of several it was given.
#[derive(Default)]
struct BatchRecordingHandler {
    batches: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
}

impl EventHandler for BatchRecordingHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[&ReceivedEvent],
    ) -> Result<(), HandlerError> {
        if let [received] = events {
            return RecordingHandler.record(tx, received).await;
        }
        self.batches.lock().expect("batches").push(events.len());
        let mut values = Vec::new();
        for received in events {
            let Event::OrderCancelled(cancelled) = &received.event else {
                continue;
            };
            let Ok(value) = cancelled.reason.trim_start_matches("step-").parse::<i64>() else {
                return Err(HandlerError::Rejected(anyhow::anyhow!(
                    "a batch holding {:?}",
                    cancelled.reason
                )));
            };
            values.push((received.metadata.event_id, received.key.as_str(), value));
        }
        sqlx::query(
            "INSERT INTO effects (event_id, key, value)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[])",
        )
        .bind(values.iter().map(|(id, _, _)| *id).collect::<Vec<_>>())
        .bind(values.iter().map(|(_, key, _)| *key).collect::<Vec<_>>())
        .bind(
            values
                .iter()
                .map(|(_, _, value)| *value)
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// One publish round that marks its rows; how many Kafka acknowledged.
async fn published(relay: &mut Relay) -> usize {
    relay
        .publish_pending(MarkPublished::Yes)
        .await
        .expect("publish")
}

fn level(sku: &str, on_hand: i64) -> Event {
    StockLevelChanged {
        sku: sku.into(),
        on_hand,
        reserved: 0,
    }
    .into()
}

fn cancel(order: &str, reason: &str) -> Event {
    OrderCancelled {
        order_id: order.into(),
        reason: reason.into(),
    }
    .into()
}

/// Total messages in a topic, from its watermarks. A broker busy with other tests may fail a
/// metadata or watermark request now and then: asked again until a 30 s deadline.
async fn messages_in(kafka: &KafkaSettings, topic: &str) -> i64 {
    let config = messaging::client::base_config(kafka);
    let topic = kafka.topic(topic);
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = config.create().expect("consumer");
        let count = || -> rdkafka::error::KafkaResult<i64> {
            let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
            let mut total = 0;
            for partition in metadata.topics()[0].partitions() {
                let (low, high) =
                    consumer.fetch_watermarks(&topic, partition.id(), Duration::from_secs(5))?;
                total += high - low;
            }
            Ok(total)
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match count() {
                Ok(total) => return total,
                Err(error) if Instant::now() < deadline => {
                    eprintln!("counting {topic}: {error}; asking again");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(error) => panic!("counting {topic}: {error}"),
            }
        }
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn an_event_published_twice_after_a_relay_crash_has_one_effect() {
    let fixture = Fixture::new("crash").await;
    fixture
        .append(&[level("SKU-A", 7), level("SKU-B", 8)])
        .await;

    // Kafka acknowledges, then the relay "crashes" before marking the rows published.
    let mut relay = fixture.relay();
    assert_eq!(
        relay
            .publish_pending(MarkPublished::No)
            .await
            .expect("publish"),
        2
    );
    // The restarted relay finds the rows still pending and publishes them again.
    let mut restarted = fixture.relay();
    assert_eq!(published(&mut restarted).await, 2);
    assert_eq!(published(&mut restarted).await, 0);
    assert_eq!(
        messages_in(&fixture.kafka, "stock-levels").await,
        4,
        "each event is in Kafka twice"
    );

    let (shutdown, task) = fixture.start_consumer(&["stock-levels"]);
    fixture.wait_for_effects(2, Duration::from_secs(30)).await;
    // Give the duplicates time to arrive, and prove they were seen and skipped.
    eventually(
        "both duplicates to be consumed",
        Duration::from_secs(30),
        || async {
            let (handled,): (i64,) = sqlx::query_as("SELECT count(*) FROM messaging_inbox")
                .fetch_one(&fixture.pool)
                .await
                .ok()?;
            let lag_free = messages_in(&fixture.kafka, "stock-levels").await == 4;
            (handled == 2 && lag_free).then_some(())
        },
    )
    .await;
    stop_task(shutdown, task).await;
    assert_eq!(fixture.effect_count().await, 2, "each effect exactly once");
    assert_eq!(fixture.effects_of("SKU-A").await, vec![7]);
}

#[tokio::test]
async fn a_round_marks_what_the_previous_round_published_and_never_publishes_it_again() {
    let fixture = Fixture::new("marks").await;
    fixture
        .append(&[level("SKU-A", 1), level("SKU-B", 2)])
        .await;
    let unpublished = || async {
        bazaar_integration_tests::unpublished_outbox_rows(&fixture.pool)
            .await
            .expect("count")
    };

    let mut relay = fixture.relay();
    assert_eq!(published(&mut relay).await, 2);
    assert_eq!(
        unpublished().await,
        2,
        "acknowledged rows wait for the next statement"
    );

    fixture.append(&[level("SKU-C", 3)]).await;
    assert_eq!(
        published(&mut relay).await,
        1,
        "the next round marks the first two and publishes only the new row"
    );
    assert_eq!(unpublished().await, 1);
    relay.mark_acknowledged().await.expect("mark");
    assert_eq!(unpublished().await, 0);
    assert_eq!(published(&mut relay).await, 0);
    assert_eq!(
        messages_in(&fixture.kafka, "stock-levels").await,
        3,
        "each event once"
    );
}

#[tokio::test]
async fn events_published_together_keep_their_order_and_each_its_lineage() {
    let fixture = Fixture::new("publish_all").await;
    let cause = EventMetadata::originating("OrderCancelled", "order-7", None);
    let events = vec![
        level("SKU-B", 3),
        level("SKU-A", 1),
        Event::OrderCancelled(OrderCancelled {
            order_id: "order-7".into(),
            reason: "test".into(),
        }),
    ];
    let mut tx = fixture.pool.begin().await.expect("begin");
    messaging::outbox::publish_all(&mut tx, &events, Cause::Event(&cause))
        .await
        .expect("publish");
    tx.commit().await.expect("commit");

    let rows: Vec<(String, String, String, serde_json::Value)> = sqlx::query_as(
        "SELECT message_key, event_type, topic, headers FROM messaging_outbox ORDER BY id",
    )
    .fetch_all(&fixture.pool)
    .await
    .expect("outbox");
    let appended: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|(key, event_type, topic, _)| (key.as_str(), event_type.as_str(), topic.as_str()))
        .collect();
    assert_eq!(
        appended,
        [
            ("SKU-B", "StockLevelChanged", "stock-levels"),
            ("SKU-A", "StockLevelChanged", "stock-levels"),
            ("order-7", "OrderCancelled", "order-events"),
        ]
    );
    let header = |headers: &serde_json::Value, name: &str| {
        headers
            .as_array()
            .and_then(|pairs| pairs.iter().find(|pair| pair[0] == name))
            .and_then(|pair| pair[1].as_str().map(str::to_owned))
    };
    let mut event_ids = std::collections::HashSet::new();
    for (_, _, _, headers) in &rows {
        assert_eq!(
            header(headers, "correlation-id").as_deref(),
            Some(cause.correlation_id.as_str()),
            "every event continues the cause's flow: {headers}"
        );
        assert_eq!(
            header(headers, "causation-id"),
            Some(cause.event_id.to_string()),
            "every event is caused by the consumed one: {headers}"
        );
        assert!(
            event_ids.insert(header(headers, "event-id")),
            "event ids differ"
        );
    }
}

#[tokio::test]
async fn ten_thousand_events_over_many_keys_keep_per_key_order() {
    let fixture = Fixture::new("order").await;
    let keys = 50;
    let per_key = 200;
    let started = Instant::now();
    let (relay_stop, relay_task) = fixture.start_relay();
    let (consumer_stop, consumer_task) = fixture.start_consumer(&["stock-levels"]);
    // 100 transactions of 100 events, interleaving keys, while relay and consumer run.
    for batch in 0..(keys * per_key / 100) {
        let events: Vec<Event> = (0..100)
            .map(|i| {
                let n = batch * 100 + i;
                level(&format!("SKU-{:02}", n % keys), n / keys)
            })
            .collect();
        fixture.append(&events).await;
    }
    fixture
        .wait_for_effects(keys * per_key, Duration::from_secs(180))
        .await;
    let elapsed = started.elapsed();
    stop_task(consumer_stop, consumer_task).await;
    stop_task(relay_stop, relay_task).await;

    for key in 0..keys {
        let values = fixture.effects_of(&format!("SKU-{key:02}")).await;
        let expected: Vec<i64> = (0..per_key).collect();
        assert_eq!(values, expected, "SKU-{key:02} out of order or incomplete");
    }
    assert_eq!(fixture.effect_count().await, keys * per_key);
    println!("10,000 events through outbox → Kafka → consumer in {elapsed:?}");
}

#[tokio::test]
async fn a_poison_message_parks_its_key_while_other_keys_flow_and_redrive_releases_it_in_order() {
    let fixture = Fixture::new("poison").await;
    let (relay_stop, relay_task) = fixture.start_relay();
    let (consumer_stop, consumer_task) = fixture.start_consumer(&["order-events"]);

    fixture
        .append(&[cancel("order-A", "step-1"), cancel("order-B", "step-1")])
        .await;
    fixture
        .append(&[cancel("order-A", "poison"), cancel("order-B", "step-2")])
        .await;
    fixture
        .append(&[cancel("order-A", "step-3"), cancel("order-B", "step-3")])
        .await;
    fixture.append(&[cancel("order-A", "step-4")]).await;

    eventually(
        "order-B to flow past order-A's poison",
        Duration::from_secs(30),
        || async { (fixture.effects_of("order-B").await == vec![1, 2, 3]).then_some(()) },
    )
    .await;
    eventually(
        "order-A's later messages to be parked behind the poison",
        Duration::from_secs(30),
        || async {
            let parked = fixture.parked_messages_of("order-A").await?;
            (parked == 3).then_some(())
        },
    )
    .await;
    assert_eq!(
        fixture.effects_of("order-A").await,
        vec![1],
        "nothing of order-A after the poison"
    );
    let keys = messaging::dead_letter::parked_keys(&fixture.pool)
        .await
        .expect("parked keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].message_key, "order-A");
    assert!(
        keys[0].error.contains("cannot cancel with reason poison"),
        "{}",
        keys[0].error
    );

    // The dead-letter topic holds the poison and the two parked behind it, with their headers.
    let dead_letters = read_topic(&fixture.kafka, "order-events.dlq", 3).await;
    let reasons: Vec<String> = dead_letters
        .iter()
        .map(|headers| headers["dlq-reason"].clone())
        .collect();
    assert_eq!(reasons, vec!["failed", "parked", "parked"]);
    let first = &dead_letters[0];
    assert_eq!(
        first["dlq-original-topic"],
        fixture.kafka.topic("order-events")
    );
    assert!(first["dlq-error"].contains("poison"));
    assert_eq!(first["dlq-attempts"], "1");
    assert!(
        first.contains_key("dlq-original-partition") && first.contains_key("dlq-original-offset")
    );
    assert_eq!(first["dlq-consumer-group"], fixture.kafka.group_id);
    assert_eq!(first["event-type"], "OrderCancelled");

    // Deploy the fix, then redrive: the parked messages go through in their original order, and
    // a message arriving afterwards follows them.
    sqlx::query("INSERT INTO fixed VALUES (true)")
        .execute(&fixture.pool)
        .await
        .expect("fix");
    let marked = messaging::dead_letter::request_redrive(
        &fixture.pool,
        &fixture.kafka.topic("order-events"),
        Some("order-A"),
    )
    .await
    .expect("redrive");
    assert_eq!(marked, 1);
    // Well inside the consumer's 30 s fallback poll: the request's NOTIFY starts the redrive.
    eventually(
        "order-A to be released",
        Duration::from_secs(10),
        || async {
            messaging::dead_letter::parked_keys(&fixture.pool)
                .await
                .ok()?
                .is_empty()
                .then_some(())
        },
    )
    .await;
    fixture.append(&[cancel("order-A", "step-5")]).await;
    eventually(
        "order-A to complete in order",
        Duration::from_secs(30),
        || async { (fixture.effects_of("order-A").await.len() == 5).then_some(()) },
    )
    .await;
    assert_eq!(
        fixture.effects_of("order-A").await,
        vec![1, -1, 3, 4, 5],
        "poison (-1) replayed in its place"
    );

    stop_task(consumer_stop, consumer_task).await;
    stop_task(relay_stop, relay_task).await;
}

#[tokio::test]
async fn an_undecodable_message_is_dead_lettered_without_stopping_the_partition() {
    let fixture = Fixture::new("garbage").await;
    let (relay_stop, relay_task) = fixture.start_relay();
    let producer: FutureProducer =
        messaging::relay::producer_config(&fixture.kafka, Duration::from_millis(1))
            .create()
            .expect("producer");
    producer
        .send(
            FutureRecord::to(&fixture.kafka.topic("stock-levels"))
                .key("SKU-X")
                .payload("{not avro}"),
            Duration::from_secs(10),
        )
        .await
        .expect("produce garbage");
    fixture
        .append(&[level("SKU-X", 1), level("SKU-Y", 2)])
        .await;
    let (consumer_stop, consumer_task) = fixture.start_consumer(&["stock-levels"]);

    eventually("SKU-Y to be applied", Duration::from_secs(30), || async {
        (fixture.effects_of("SKU-Y").await == vec![2]).then_some(())
    })
    .await;
    eventually(
        "SKU-X's event to be parked behind the garbage",
        Duration::from_secs(30),
        || async {
            let keys = messaging::dead_letter::parked_keys(&fixture.pool)
                .await
                .ok()?;
            (keys.len() == 1 && keys[0].parked_messages == 2).then_some(keys)
        },
    )
    .await;
    let keys = messaging::dead_letter::parked_keys(&fixture.pool)
        .await
        .expect("keys");
    assert!(
        keys[0].error.contains("metadata") || keys[0].error.contains("wire format"),
        "{}",
        keys[0].error
    );
    assert!(fixture.effects_of("SKU-X").await.is_empty());
    stop_task(consumer_stop, consumer_task).await;
    stop_task(relay_stop, relay_task).await;
}

#[tokio::test]
async fn a_consumer_stopped_mid_stream_resumes_from_its_stored_offset() {
    let fixture = Fixture::new("resume").await;
    let total = 400;
    let events: Vec<Event> = (0..total)
        .map(|n| level(&format!("SKU-{}", n % 8), n))
        .collect();
    // The first half is published and handled before the first consumer stops; the second
    // half is published after, so the first consumer stops mid-stream whatever its batch size
    // (stopping it "after a quarter" raced with batches of 100 that took all 400 at once).
    let (first_half, second_half) = events.split_at(events.len() / 2);
    for chunk in first_half.chunks(50) {
        fixture.append(chunk).await;
    }
    let (relay_stop, relay_task) = fixture.start_relay();
    let (first_stop, first_task) = fixture.start_consumer(&["stock-levels"]);
    fixture
        .wait_for_effects(first_half.len() as i64, Duration::from_secs(60))
        .await;
    stop_task(first_stop, first_task).await;
    let after_first = fixture.effect_count().await;
    assert_eq!(
        after_first,
        first_half.len() as i64,
        "the first consumer saw the first half"
    );
    for chunk in second_half.chunks(50) {
        fixture.append(chunk).await;
    }

    let (second_stop, second_task) = fixture.start_consumer(&["stock-levels"]);
    fixture
        .wait_for_effects(total, Duration::from_secs(60))
        .await;
    stop_task(second_stop, second_task).await;
    stop_task(relay_stop, relay_task).await;

    let (count, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM effects")
            .fetch_one(&fixture.pool)
            .await
            .expect("counts");
    assert_eq!(
        (count, distinct),
        (total, total),
        "nothing lost, nothing applied twice"
    );
    let mut per_key: HashMap<String, Vec<i64>> = HashMap::new();
    for n in 0..total {
        per_key.entry(format!("SKU-{}", n % 8)).or_default().push(n);
    }
    for (key, expected) in per_key {
        assert_eq!(fixture.effects_of(&key).await, expected, "{key}");
    }
}

/// The backends of the consumer's own sessions (not its pool's, nor its listener's).
async fn consumer_sessions(pool: &PgPool) -> Vec<i32> {
    sqlx::query_as::<_, (i32,)>(
        "SELECT pid FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = $1 ORDER BY pid",
    )
    .bind(messaging::consumer::consumer_session_name("test"))
    .fetch_all(pool)
    .await
    .expect("sessions")
    .into_iter()
    .map(|(pid,)| pid)
    .collect()
}

#[tokio::test]
async fn a_consumer_whose_sessions_die_opens_others_and_loses_nothing() {
    let fixture = Fixture::new("consumer_session").await;
    let (relay_stop, relay_task) = fixture.start_relay();
    let (consumer_stop, consumer_task) = fixture.start_consumer(&["stock-levels"]);
    fixture.append(&[level("SKU-1", 1)]).await;
    fixture.wait_for_effects(1, Duration::from_secs(60)).await;
    let first = consumer_sessions(&fixture.pool).await;
    assert!(
        !first.is_empty(),
        "the batch ran on a session of the consumer's own"
    );

    let (terminated,): (i64,) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM unnest($1::int[]) AS pid",
    )
    .bind(&first)
    .fetch_one(&fixture.pool)
    .await
    .expect("terminate");
    assert_eq!(terminated, first.len() as i64);
    fixture
        .append(&[level("SKU-1", 2), level("SKU-2", 3)])
        .await;
    fixture.wait_for_effects(3, Duration::from_secs(60)).await;
    let second = consumer_sessions(&fixture.pool).await;
    assert!(
        second.iter().all(|pid| !first.contains(pid)) && !second.is_empty(),
        "new sessions ({second:?}) replaced the terminated ({first:?})"
    );
    assert!(!consumer_task.is_finished(), "the consumer must not stop");
    stop_task(consumer_stop, consumer_task).await;
    stop_task(relay_stop, relay_task).await;
    assert_eq!(fixture.effects_of("SKU-1").await, vec![1, 2]);
    assert_eq!(fixture.effects_of("SKU-2").await, vec![3]);
    // A backend leaves pg_stat_activity a moment after its client said goodbye.
    eventually(
        "a stopped consumer to close its sessions",
        Duration::from_secs(10),
        || async {
            consumer_sessions(&fixture.pool)
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_row_the_database_refuses_is_dead_lettered_at_once_and_its_key_parked() {
    let fixture = Fixture::new("poison-row").await;
    // A rule of the data, as a migration would add it. An event that breaks it breaks it on
    // every retry: SQLSTATE 23514, a rejection.
    sqlx::query("ALTER TABLE effects ADD CONSTRAINT effects_value_not_negative CHECK (value >= 0)")
        .execute(&fixture.pool)
        .await
        .expect("constraint");
    let (relay_stop, relay_task) = fixture.start_relay();
    let (consumer_stop, consumer_task) = fixture.start_consumer(&["order-events"]);

    fixture
        .append(&[cancel("order-A", "step-1"), cancel("order-B", "step-1")])
        .await;
    // A reason the handler cannot read becomes the value -1, which the CHECK refuses.
    fixture
        .append(&[cancel("order-A", "unreadable"), cancel("order-B", "step-2")])
        .await;
    fixture.append(&[cancel("order-A", "step-3")]).await;

    eventually(
        "order-B to flow past order-A's poison row",
        Duration::from_secs(30),
        || async { (fixture.effects_of("order-B").await == vec![1, 2]).then_some(()) },
    )
    .await;
    let parked = eventually("order-A to be parked", Duration::from_secs(30), || async {
        let keys = messaging::dead_letter::parked_keys(&fixture.pool)
            .await
            .ok()?;
        (!keys.is_empty()).then_some(keys)
    })
    .await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].message_key, "order-A");
    assert!(
        parked[0].error.contains("effects_value_not_negative"),
        "{}",
        parked[0].error
    );
    let dead_letters = read_topic(&fixture.kafka, "order-events.dlq", 2).await;
    assert_eq!(dead_letters[0]["dlq-reason"], "failed");
    assert_eq!(
        dead_letters[0]["dlq-attempts"], "1",
        "refused at once, not after retries"
    );
    assert_eq!(dead_letters[1]["dlq-reason"], "parked");
    assert_eq!(fixture.effects_of("order-A").await, vec![1]);

    stop_task(consumer_stop, consumer_task).await;
    stop_task(relay_stop, relay_task).await;
}

/// The largest `consumer_retrying_attempts` of any partition of `topic` in this process.
fn retrying_attempts(topic: &str) -> f64 {
    let label = format!("topic=\"{topic}\"");
    platform::metrics::render()
        .lines()
        .filter(|line| line.starts_with("consumer_retrying_attempts{") && line.contains(&label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, f64::max)
}

#[tokio::test]
async fn a_transient_failure_is_retried_and_a_metric_shows_it_until_it_passes() {
    // The process's recorder, installed before anything is counted.
    assert!(platform::metrics::handle().is_some(), "a metrics recorder");
    assert_eq!(
        ConsumerSettings::for_topics(&[]).max_transient_attempts,
        Some(messaging::consumer::DEFAULT_MAX_TRANSIENT_ATTEMPTS),
        "retries end by default"
    );
    let fixture = Fixture::new("retrying").await;
    let topic = fixture.kafka.topic("order-events");
    let (relay_stop, relay_task) = fixture.start_relay();
    let (consumer_stop, consumer_task) = fixture.start_consumer(&["order-events"]);
    fixture.append(&[cancel("order-A", "step-1")]).await;
    fixture.wait_for_effects(1, Duration::from_secs(30)).await;

    fixture.move_effects_table(true).await;
    fixture.append(&[cancel("order-A", "step-2")]).await;
    eventually(
        "the retried message to show on the gauge",
        Duration::from_secs(30),
        || async { (retrying_attempts(&topic) >= 2.0).then_some(()) },
    )
    .await;
    fixture.move_effects_table(false).await;
    eventually(
        "the message to pass once the table is back",
        Duration::from_secs(30),
        || async { (fixture.effects_of("order-A").await == vec![1, 2]).then_some(()) },
    )
    .await;
    eventually(
        "the gauge to go back to 0",
        Duration::from_secs(10),
        || async { (retrying_attempts(&topic) == 0.0).then_some(()) },
    )
    .await;
    assert!(
        messaging::dead_letter::parked_keys(&fixture.pool)
            .await
            .expect("parked keys")
            .is_empty(),
        "a transient failure parks nothing"
    );

    stop_task(consumer_stop, consumer_task).await;
    stop_task(relay_stop, relay_task).await;
}

/// Reads `count` messages of a topic from the beginning and returns their headers.
async fn read_topic(
    kafka: &KafkaSettings,
    topic: &str,
    count: usize,
) -> Vec<HashMap<String, String>> {
    let consumer: StreamConsumer = messaging::client::base_config(kafka)
        .set(
            "group.id",
            format!("{}-reader-{}", kafka.group_id, uuid::Uuid::now_v7()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    consumer
        .subscribe(&[&kafka.topic(topic)])
        .expect("subscribe");
    let mut stream = consumer.stream();
    let mut found = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while found.len() < count {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(remaining, stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} messages in {topic}", found.len()))
            .expect("stream")
            .expect("message");
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.push(headers);
    }
    found
}

#[tokio::test]
async fn a_worker_woken_by_a_burst_of_notifications_looks_once_not_once_per_notification() {
    use messaging::worker::{PollingWorker, Round};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const CHANNEL: &str = "test_worker_burst";
    const BURST: usize = 20;
    let fixture = Fixture::new("worker_burst").await;
    let rounds = Arc::new(AtomicUsize::new(0));
    // The second round holds until the burst has been delivered, as a round does while the work
    // it claimed announces itself.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn({
        let (pool, rounds, gate, shutdown) = (
            fixture.pool.clone(),
            rounds.clone(),
            gate.clone(),
            shutdown.clone(),
        );
        PollingWorker::new("burst test", Duration::from_secs(600))
            .woken_by(CHANNEL)
            .run(pool, shutdown, move || {
                let (rounds, gate) = (rounds.clone(), gate.clone());
                async move {
                    if rounds.fetch_add(1, Ordering::SeqCst) == 1 {
                        gate.acquire()
                            .await
                            .map_err(|error| error.to_string())?
                            .forget();
                    }
                    Ok::<_, String>(Round::Idle)
                }
            })
    });
    let rounds_reach = |wanted: usize| {
        let rounds = rounds.clone();
        async move {
            eventually("the worker's rounds", Duration::from_secs(10), || {
                let rounds = rounds.clone();
                async move { (rounds.load(Ordering::SeqCst) >= wanted).then_some(()) }
            })
            .await
        }
    };
    let notify = || async {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&fixture.pool)
            .await
            .expect("notify");
    };
    // The first round runs at start; a notification after it starts the held one. The worker
    // listens before its first round, so nothing sent after that round is lost.
    rounds_reach(1).await;
    notify().await;
    rounds_reach(2).await;

    // A burst, each in its own transaction, proven delivered by a listener of the test's own.
    let mut witness = platform::db::listener(&fixture.pool)
        .await
        .expect("listener");
    witness.listen(CHANNEL).await.expect("listen");
    for _ in 0..BURST {
        notify().await;
    }
    for _ in 0..BURST {
        tokio::time::timeout(Duration::from_secs(10), witness.recv())
            .await
            .expect("the burst is delivered in time")
            .expect("notification");
    }
    gate.add_permits(1);
    rounds_reach(3).await;
    // Proof that the worker is waiting again: one more notification, one more round.
    notify().await;
    tokio::time::timeout(Duration::from_secs(10), witness.recv())
        .await
        .expect("delivered")
        .expect("notification");
    rounds_reach(4).await;
    shutdown.cancel();
    worker.await.expect("worker").expect("worker ends cleanly");

    let rounds = rounds.load(Ordering::SeqCst);
    // One look answers the whole burst (a notification caught mid-delivery may add one);
    // a round per notification would make it BURST + 3.
    assert!(
        rounds <= 6,
        "{rounds} rounds for a burst of {BURST} notifications delivered during one round"
    );
}

#[tokio::test]
async fn a_batch_handled_whole_that_fails_is_handled_again_one_event_at_a_time() {
    let fixture = Fixture::new("batch-whole").await;
    let mut events = Vec::new();
    for step in 1..=20 {
        let a_reason = if step == 10 {
            "poison".to_owned()
        } else {
            format!("step-{step}")
        };
        events.push(cancel("order-A", &a_reason));
        events.push(cancel("order-B", &format!("step-{step}")));
    }
    fixture.append(&events).await;
    // Everything is on the topic before the consumer starts: its first fetch brings it all.
    let mut relay = fixture.relay();
    let mut sent = 0;
    while sent < events.len() {
        sent += published(&mut relay).await;
    }
    let handler = BatchRecordingHandler::default();
    let batches = handler.batches.clone();
    let (consumer_stop, consumer_task) = fixture.start_consumer_with(&["order-events"], handler);

    eventually("order-B to be handled", Duration::from_secs(30), || async {
        (fixture.effects_of("order-B").await.len() == 20).then_some(())
    })
    .await;
    eventually(
        "order-A's poison and the ten messages behind it to be parked",
        Duration::from_secs(30),
        || async {
            let parked = fixture.parked_messages_of("order-A").await?;
            (parked == 11).then_some(())
        },
    )
    .await;
    stop_task(consumer_stop, consumer_task).await;

    let batches = batches.lock().expect("batches").clone();
    assert!(
        batches.iter().any(|&size| size > 1),
        "the handler was given whole batches: {batches:?}"
    );
    assert_eq!(
        fixture.effects_of("order-B").await,
        (1..=20).collect::<Vec<i64>>(),
        "each of order-B's events once, in order"
    );
    assert_eq!(
        fixture.effects_of("order-A").await,
        (1..=9).collect::<Vec<i64>>(),
        "order-A up to its poison, once each: the failed batch left nothing"
    );
    let keys = messaging::dead_letter::parked_keys(&fixture.pool)
        .await
        .expect("parked keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].message_key, "order-A");
    assert!(keys[0].error.contains("poison"), "{}", keys[0].error);
}
