//! Throughput and latency of the messaging runtime on this machine, beside Kafka's own floor.
//!
//! - Relay throughput: events/s from outbox to Kafka acknowledgement, on a backlog.
//! - One hop: time from the commit of an outbox row to its handler running in a consumer, for
//!   events committed one at a time at a steady rate.
//! - Floors: Kafka's EndToEndLatency tool (acks=all) and one PostgreSQL commit.
//!
//! Needs PostgreSQL, Kafka and the schema registry running (`make bench-messaging` starts them).
//! Run with `cargo run --release -p bazaar-integration-tests --example messaging-bench`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bazaar_bench::{Percentiles, kafka_end_to_end_latency};
use bazaar_integration_tests::{fresh_messaging_database, isolated_kafka};
use clap::Parser;
use events::{Event, EventMetadata, StockLevelChanged};
use messaging::consumer::ConsumerSettings;
use messaging::relay::MarkPublished;
use messaging::{
    EventHandler, HandlerError, IdempotentConsumer, ReceivedEvent, Relay, RelaySettings,
};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Measure relay throughput and one-hop latency, and Kafka's and PostgreSQL's floors.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Events in the throughput backlog.
    #[arg(long, default_value_t = 20_000)]
    backlog: usize,
    /// Events in the latency run, committed one per transaction.
    #[arg(long, default_value_t = 2_000)]
    latency_events: usize,
    /// Rate of the latency run, events per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
}

type Times = Arc<Mutex<HashMap<Uuid, Instant>>>;

/// Records when each event reached its handler. Commit times are recorded by the producer side;
/// a hop can be faster than the producer noting its commit, so the two are joined at the end.
struct ArrivalProbe {
    arrived: Times,
}

impl EventHandler for ArrivalProbe {
    async fn handle(
        &self,
        _tx: &mut PgConnection,
        events: &[&ReceivedEvent],
    ) -> Result<(), HandlerError> {
        let now = Instant::now();
        if let Ok(mut arrived) = self.arrived.lock() {
            for event in events {
                arrived.entry(event.metadata.event_id).or_insert(now);
            }
        }
        Ok(())
    }
}

fn level(n: usize) -> Event {
    StockLevelChanged {
        sku: format!("SKU-{}", n % 64),
        on_hand: n as i64,
        reserved: 0,
    }
    .into()
}

async fn append(pool: &PgPool, events: &[Event]) -> anyhow::Result<Vec<Uuid>> {
    let mut tx = pool.begin().await?;
    let mut ids = Vec::with_capacity(events.len());
    for event in events {
        let metadata = EventMetadata::originating(event.type_name(), event.key(), None);
        ids.push(metadata.event_id);
        messaging::outbox::append(&mut tx, event, &metadata).await?;
    }
    tx.commit().await?;
    Ok(ids)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    bazaar_integration_tests::init_test_logging();
    let repo_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (_, pool) = fresh_messaging_database("bench").await?;
    let kafka = isolated_kafka("bench");
    messaging::topics::apply(&messaging::TopicCatalog::bundled()?, &kafka).await?;

    // Floor 1: one PostgreSQL commit of a small row.
    sqlx::query(
        "CREATE TABLE commit_probe (id BIGSERIAL PRIMARY KEY, at TIMESTAMPTZ DEFAULT now())",
    )
    .execute(&pool)
    .await?;
    let mut commits = Vec::new();
    for _ in 0..500 {
        let started = Instant::now();
        let mut tx = pool.begin().await?;
        sqlx::query("INSERT INTO commit_probe DEFAULT VALUES")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        commits.push(started.elapsed());
    }
    let commit = Percentiles::of(&mut commits).ok_or_else(|| anyhow::anyhow!("no commits"))?;

    // Throughput: a backlog in batches of 500 per transaction, drained by one relay.
    println!("appending a backlog of {} events...", args.backlog);
    let batch: Vec<Event> = (0..500).map(level).collect();
    for _ in 0..args.backlog.div_ceil(500) {
        append(&pool, &batch).await?;
    }
    let mut relay = Relay::new(
        "bench",
        pool.clone(),
        kafka.clone(),
        RelaySettings::default(),
    )?;
    let started = Instant::now();
    let mut published = 0;
    loop {
        let round = relay.publish_pending(MarkPublished::Yes).await?;
        if round == 0 {
            break;
        }
        published += round;
    }
    let relay_rate = published as f64 / started.elapsed().as_secs_f64();

    // Latency: a running relay and consumer; events committed one per transaction at `rate`.
    let committed: Times = Arc::default();
    let arrived: Times = Arc::default();
    let shutdown = CancellationToken::new();
    let mut latency_kafka = kafka.clone();
    latency_kafka.topic_prefix = format!("{}latency.", kafka.topic_prefix);
    messaging::topics::apply(&messaging::TopicCatalog::bundled()?, &latency_kafka).await?;
    let relay = Relay::new(
        "bench",
        pool.clone(),
        latency_kafka.clone(),
        RelaySettings::default(),
    )?;
    let relay_task = tokio::spawn(relay.run(shutdown.clone()));
    let consumer = IdempotentConsumer::new(
        "bench",
        pool.clone(),
        latency_kafka.clone(),
        ConsumerSettings::for_topics(&["stock-levels"]),
        ArrivalProbe {
            arrived: arrived.clone(),
        },
    );
    let consumer_task = tokio::spawn(consumer.run(shutdown.clone()));
    let count = |times: &Times| times.lock().map(|t| t.len()).unwrap_or(0);
    // Warm up: the consumer joins its group and the registry ids get cached.
    append(&pool, &[level(0)]).await?;
    let warm_deadline = Instant::now() + Duration::from_secs(60);
    while count(&arrived) == 0 {
        anyhow::ensure!(
            Instant::now() < warm_deadline,
            "the warm-up event never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let warmed_up = count(&arrived);
    println!(
        "measuring one-hop latency over {} events at {}/s...",
        args.latency_events, args.rate
    );
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    for n in 0..args.latency_events {
        ticker.tick().await;
        let event = level(n);
        let metadata = EventMetadata::originating(event.type_name(), event.key(), None);
        let mut tx = pool.begin().await?;
        messaging::outbox::append(&mut tx, &event, &metadata).await?;
        tx.commit().await?;
        let at = Instant::now();
        if let Ok(mut map) = committed.lock() {
            map.insert(metadata.event_id, at);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&arrived) < warmed_up + args.latency_events {
        let so_far = count(&arrived) - warmed_up;
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {so_far} of {} latency events arrived within 60 s",
            args.latency_events
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    relay_task.await??;
    consumer_task.await??;
    let mut samples: Vec<Duration> = {
        let committed = committed.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let arrived = arrived.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        committed
            .iter()
            .filter_map(|(id, at)| {
                arrived
                    .get(id)
                    .map(|reached| reached.saturating_duration_since(*at))
            })
            .collect()
    };
    let hop = Percentiles::of(&mut samples).ok_or_else(|| anyhow::anyhow!("no samples"))?;

    // Floor 2: Kafka's own end-to-end latency on this broker.
    let e2e_topic = kafka.topic("e2e-latency");
    let (kafka_avg, kafka_p50, kafka_p99) =
        kafka_end_to_end_latency(&repo_root, &kafka.bootstrap_servers, &e2e_topic, 5_000, 200)?;

    // The tool prints whole-millisecond percentiles (p50 is often 0), so the budget uses its
    // average, which has four decimals.
    let budget = kafka_avg + commit.p50 + 2.0;
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| relay throughput (backlog of {published}, batches of 500) | {relay_rate:.0} events/s |"
    );
    println!(
        "| one hop commit → handler, p50 / p95 / p99 / max ({} events at {}/s) | {:.2} / {:.2} / {:.2} / {:.2} ms |",
        hop.count, args.rate, hop.p50, hop.p95, hop.p99, hop.max
    );
    println!(
        "| Kafka EndToEndLatency (acks=all, 5000 × 200 B), avg / p50 / p99 | {kafka_avg:.2} / {kafka_p50:.0} / {kafka_p99:.0} ms |"
    );
    println!(
        "| PostgreSQL commit of one row, p50 / p99 | {:.2} / {:.2} ms |",
        commit.p50, commit.p99
    );
    println!(
        "| target: hop p50 ≤ Kafka average + commit p50 + 2 ms | {:.2} ≤ {budget:.2} ms: {} |",
        hop.p50,
        if hop.p50 <= budget { "met" } else { "NOT met" }
    );
    Ok(())
}
