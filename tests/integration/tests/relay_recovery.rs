//! The outbox relay against a database that goes away under it. A PostgreSQL restart (found by
//! the chaos suite's scenario 5) kills the session that holds the relay's advisory lock; the
//! relay must step down and take the lock again, not stop publishing for good.

use std::time::Duration;

use bazaar_integration_tests::{eventually, fresh_messaging_database, isolated_kafka, stop_task};
use events::{Event, EventMetadata, StockLevelChanged};
use messaging::{Relay, RelaySettings};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const SERVICE: &str = "test";

/// The backend holding this database's relay lock, if any.
async fn lock_holder(pool: &PgPool) -> Option<i32> {
    sqlx::query_as::<_, (i32,)>(
        "SELECT pid FROM pg_locks
          WHERE locktype = 'advisory' AND granted
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_optional(pool)
    .await
    .ok()
    .flatten()
    .map(|(pid,)| pid)
}

async fn append_level(pool: &PgPool, on_hand: i64) {
    let event: Event = StockLevelChanged {
        sku: "SKU-R".into(),
        on_hand,
        reserved: 0,
    }
    .into();
    let metadata = EventMetadata::originating(event.type_name(), event.key(), None);
    let mut tx = pool.begin().await.expect("begin");
    messaging::outbox::append(&mut tx, &event, &metadata)
        .await
        .expect("append");
    tx.commit().await.expect("commit");
}

async fn unpublished(pool: &PgPool) -> i64 {
    bazaar_integration_tests::unpublished_outbox_rows(pool)
        .await
        .unwrap_or(-1)
}

/// A relay running on a fresh database and topics of its own (`name` tells them apart).
async fn running_relay(
    name: &str,
) -> (
    PgPool,
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let (_, pool) = fresh_messaging_database(name).await.expect("database");
    let kafka = isolated_kafka(name);
    messaging::topics::apply(
        &messaging::TopicCatalog::bundled().expect("catalog"),
        &kafka,
    )
    .await
    .expect("topics");
    let relay = Relay::new(
        SERVICE,
        pool.clone(),
        kafka,
        RelaySettings {
            poll_interval: Duration::from_millis(100),
            // The lock's session is checked at least this often.
            purge_interval: Duration::from_millis(200),
            ..RelaySettings::default()
        },
    )
    .expect("relay");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    (pool, shutdown, task)
}

async fn all_published(pool: &PgPool, what: &str) {
    eventually(what, Duration::from_secs(30), || async {
        (unpublished(pool).await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_relay_whose_lock_session_dies_takes_the_lock_again_and_keeps_publishing() {
    bazaar_integration_tests::init_test_logging();
    let (pool, shutdown, task) = running_relay("relay_lock").await;

    append_level(&pool, 1).await;
    all_published(&pool, "the first event to be published").await;
    let first = eventually(
        "the relay to hold its lock",
        Duration::from_secs(10),
        || lock_holder(&pool),
    )
    .await;

    // What a server restart does to the lock: its session ends under the relay's feet.
    let (terminated,): (bool,) = sqlx::query_as("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&pool)
        .await
        .expect("terminate");
    assert!(terminated);
    let second = eventually(
        "the relay to take the lock again in a new session",
        Duration::from_secs(30),
        || async { lock_holder(&pool).await.filter(|pid| *pid != first) },
    )
    .await;
    assert_ne!(first, second);
    assert!(!task.is_finished(), "the relay must not stop");

    append_level(&pool, 2).await;
    all_published(&pool, "an event appended after the loss to be published").await;
    stop_task(shutdown, task).await;
}

/// The relay reads and marks rows on a session of its own, beside the lock's: losing it must
/// not stop publishing either.
#[tokio::test]
async fn a_relay_whose_outbox_session_dies_opens_another_and_keeps_publishing() {
    bazaar_integration_tests::init_test_logging();
    let (pool, shutdown, task) = running_relay("relay_outbox").await;
    let outbox_session = || async {
        sqlx::query_as::<_, (i32,)>(
            "SELECT pid FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = $1",
        )
        .bind(messaging::relay::outbox_session_name(SERVICE))
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
        .map(|(pid,)| pid)
    };

    append_level(&pool, 1).await;
    all_published(&pool, "the first event to be published").await;
    let first = eventually(
        "the relay's outbox session",
        Duration::from_secs(10),
        outbox_session,
    )
    .await;
    let lock = lock_holder(&pool).await.expect("the relay holds its lock");
    assert_ne!(first, lock, "the outbox session is not the lock's");

    let (terminated,): (bool,) = sqlx::query_as("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&pool)
        .await
        .expect("terminate");
    assert!(terminated);
    append_level(&pool, 2).await;
    all_published(&pool, "an event appended after the loss to be published").await;
    let second = outbox_session().await.expect("a new outbox session");
    assert_ne!(first, second);
    assert_eq!(
        lock_holder(&pool).await,
        Some(lock),
        "the lock's session was not touched"
    );
    assert!(!task.is_finished(), "the relay must not stop");
    stop_task(shutdown, task).await;
}

/// How often PostgreSQL has scanned the outbox: (sequential scans, index scans).
async fn outbox_scans(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables
          WHERE relname = 'messaging_outbox'",
    )
    .fetch_one(pool)
    .await
    .expect("the outbox's statistics")
}

#[tokio::test]
async fn the_purge_deletes_what_is_past_retention_reading_only_those_rows() {
    let (_, pool) = fresh_messaging_database("relay_purge")
        .await
        .expect("database");
    // 20,000 published rows, the first 100 eight days old (past the default week), the rest an
    // hour old: a week's outbox is mostly rows to keep.
    sqlx::query(
        "INSERT INTO messaging_outbox
           (event_id, topic, message_key, event_type, payload_format, payload, headers, published_at)
         SELECT gen_random_uuid(), 'stock-levels', 'sku-' || n, 'StockLevelChanged', 'raw',
                '\\x00', '[]', now() - CASE WHEN n <= 100 THEN interval '8 days' ELSE interval '1 hour' END
           FROM generate_series(1, 20000) AS n",
    )
    .execute(&pool)
    .await
    .expect("published rows");
    sqlx::query("ANALYZE messaging_outbox")
        .execute(&pool)
        .await
        .expect("analyze");
    let before = outbox_scans(&pool).await;

    let mut relay = Relay::new(
        SERVICE,
        pool.clone(),
        isolated_kafka("relay_purge"),
        RelaySettings::default(),
    )
    .expect("relay");
    assert_eq!(relay.purge().await.expect("purge"), 100);

    // Through the index: with a sequential scan (`clock_timestamp()` in the condition, or a
    // plan that expects to delete a third of the table) no index scan would ever be counted.
    // The purge's session reports its scans when it goes idle, within PostgreSQL's 10 s; the
    // sequential ones are not compared, since the index builds of the migrations count as such
    // and are reported as late.
    eventually(
        "the purge's index scan in the statistics",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move { (outbox_scans(&pool).await.1 > before.1).then_some(()) }
        },
    )
    .await;
    // Counted last: counting reads the whole table.
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM messaging_outbox")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(left, 19_900);
}
