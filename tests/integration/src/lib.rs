//! Test harness: every test gets its own database and its own Kafka topic prefix, so tests run
//! in parallel against the one broker and one PostgreSQL server that `make test` starts.

pub mod groups;
pub mod offsets;
pub mod proof;
pub mod publisher;
pub mod stack;

use std::future::Future;
use std::time::{Duration, Instant};

use platform::config::{DatabaseSettings, KafkaSettings};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

/// A role that may create databases, provisioned by `infra/postgres/pgctl.sh`.
pub fn admin_database_url() -> String {
    std::env::var("BAZAAR_TEST_ADMIN_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://bazaar_admin:bazaar_admin@127.0.0.1:5432/postgres".into())
}

pub fn bootstrap_servers() -> String {
    std::env::var("BAZAAR__KAFKA__BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The registry `make test` starts; subjects carry the test's topic prefix, so tests share it.
pub fn schema_registry_url() -> String {
    std::env::var("BAZAAR__KAFKA__SCHEMA_REGISTRY_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8088".into())
}

/// Logs to the test output when `RUST_LOG` is set (e.g. `RUST_LOG=messaging=debug`).
pub fn init_test_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        platform::telemetry::init(
            "test",
            &platform::config::LogSettings {
                filter: "info".into(),
                format: platform::config::LogFormat::Pretty,
                ..platform::config::LogSettings::default()
            },
        );
    }
}

/// A short unique tag for one test's resources.
pub fn unique_tag() -> String {
    Uuid::now_v7().simple().to_string()
}

/// Creates an empty database for one test and returns settings that point at it.
/// Databases are named `bazaar_test_*`; `make test` drops leftovers before each run.
pub async fn fresh_database(label: &str) -> anyhow::Result<DatabaseSettings> {
    let admin_url = admin_database_url();
    let name = format!("bazaar_test_{label}_{}", unique_tag());
    let mut admin = PgConnection::connect(&admin_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(base, _)| base);
    Ok(DatabaseSettings {
        url: format!("{base}/{name}").into(),
        max_connections: 5,
        acquire_timeout_ms: 5_000,
    })
}

/// Kafka settings whose topics and group are this test's alone.
pub fn isolated_kafka(service: &str) -> KafkaSettings {
    let tag = unique_tag();
    KafkaSettings {
        bootstrap_servers: bootstrap_servers(),
        topic_prefix: format!("test-{tag}."),
        group_id: format!("test-{tag}-{service}"),
        replication_factor: 1,
        schema_registry_url: schema_registry_url(),
        schema_registry_user_info: platform::config::local_schema_registry_user_info(),
    }
}

/// Polls `probe` until it yields `Some`, failing with `what` once `deadline` has passed.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
