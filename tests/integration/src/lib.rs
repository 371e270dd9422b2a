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
        plan_cache_mode: platform::config::PlanCacheMode::default(),
    })
}

/// A fresh database (as [`fresh_database`]) with the messaging tables migrated (outbox, inbox,
/// parked keys): what a test of the messaging runtime runs on. Returns its settings and a pool.
pub async fn fresh_messaging_database(
    label: &str,
) -> anyhow::Result<(DatabaseSettings, sqlx::PgPool)> {
    let database = fresh_database(label).await?;
    let pool =
        platform::db::connect_and_migrate(&database, &messaging::migrations::migrator()).await?;
    Ok((database, pool))
}

/// The Kafka principal the tests (and the services they start) authenticate as: it may do
/// anything to topics and groups whose names start with `test-` or `chaos-`, and nothing else
/// (`infra/kafka/access.txt`, from `bazaar access --local`). Which service may do what is the
/// security suite's concern (`tests/security.rs`), with the services' own principals.
pub const TEST_PRINCIPAL: &str = "tests";

/// Authenticates `settings` as the tests' principal: its password is
/// `BAZAAR_KAFKA_PASSWORD_TESTS`, or the local one; `BAZAAR__KAFKA__SECURITY_PROTOCOL=plaintext`
/// (a broker started with `BAZAAR_KAFKA_AUTH=off`) turns authentication off.
pub fn as_test_principal(settings: KafkaSettings) -> KafkaSettings {
    let password = std::env::var("BAZAAR_KAFKA_PASSWORD_TESTS").map_or_else(
        |_| platform::config::local_kafka_password(TEST_PRINCIPAL),
        Into::into,
    );
    let mut settings = settings.as_principal(TEST_PRINCIPAL, password);
    if let Ok(protocol) = std::env::var("BAZAAR__KAFKA__SECURITY_PROTOCOL") {
        settings.security_protocol = protocol;
    }
    settings
}

/// The librdkafka properties (`name=value`) another librdkafka client (kcat, Confluent's Python
/// client) needs to connect as `settings` does, with the SASL `mechanism` given: kcat from
/// Debian 12 (librdkafka 2.0.2) cannot do SCRAM with Kafka 4 (fixed in librdkafka 2.6.1), so it
/// uses PLAIN, which the local brokers allow the tests' principal alone.
pub fn librdkafka_auth_properties(settings: &KafkaSettings, mechanism: &str) -> Vec<String> {
    messaging::client::auth_properties(settings)
        .into_iter()
        .map(|(property, value)| match property {
            "sasl.mechanism" => format!("{property}={mechanism}"),
            _ => format!("{property}={value}"),
        })
        .collect()
}

/// The environment (`BAZAAR__KAFKA__*`) that makes a service binary authenticate as `settings`
/// do.
pub fn kafka_auth_env(settings: &KafkaSettings) -> Vec<(String, String)> {
    let password = messaging::client::auth_properties(settings)
        .into_iter()
        .find_map(|(property, value)| (property == "sasl.password").then_some(value))
        .unwrap_or_default();
    vec![
        (
            "BAZAAR__KAFKA__SASL_USERNAME".into(),
            settings.sasl_username.clone(),
        ),
        ("BAZAAR__KAFKA__SASL_PASSWORD".into(), password),
        (
            "BAZAAR__KAFKA__SECURITY_PROTOCOL".into(),
            settings.security_protocol.clone(),
        ),
    ]
}

/// Kafka settings whose topics and group are this test's alone.
pub fn isolated_kafka(service: &str) -> KafkaSettings {
    let tag = unique_tag();
    as_test_principal(KafkaSettings {
        topic_prefix: format!("test-{tag}."),
        group_id: format!("test-{tag}-{service}"),
        bootstrap_servers: bootstrap_servers(),
        schema_registry_url: schema_registry_url(),
        ..KafkaSettings::local_defaults(service)
    })
}

/// The `bazaar` binary of this build (or `BAZAAR_CLI_BIN`).
pub fn bazaar_binary() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("BAZAAR_CLI_BIN") {
        return std::path::PathBuf::from(path);
    }
    // This test runs from <target>/<profile>/deps/; the binary sits in <target>/<profile>/.
    let test = std::env::current_exe().expect("path of the test binary");
    let profile_dir = test
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target directory");
    let binary = profile_dir.join(format!("bazaar{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "the bazaar binary is not at {}: build it first with `cargo build -p bazaar-cli` \
         (`make test` builds every binary before running the tests), or set BAZAAR_CLI_BIN",
        binary.display()
    );
    binary
}

/// Cancels a background task (a relay, a consumer) and waits for it to end cleanly: within
/// 30 s, without a panic or an error.
/// How many rows of a database's outbox its relay has not marked published yet.
pub async fn unpublished_outbox_rows(pool: &sqlx::PgPool) -> Result<i64, sqlx::Error> {
    let (count,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM messaging_outbox WHERE published_at IS NULL")
            .fetch_one(pool)
            .await?;
    Ok(count)
}

pub async fn stop_task(
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops within 30 s")
        .expect("no panic")
        .expect("clean stop");
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
