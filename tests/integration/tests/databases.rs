//! Each service owns a database that no other service's role can open.

use bazaar_integration_tests::{admin_database_url, fresh_messaging_database};
use platform::config::PlanCacheMode;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

const SERVICES: [&str; 8] = [
    "auth",
    "product",
    "order",
    "inventory",
    "payment",
    "notification",
    "shipping",
    "registry",
];

fn host_part() -> String {
    let admin = admin_database_url();
    let after_at = admin
        .rsplit_once('@')
        .map_or("127.0.0.1:5432/postgres", |(_, rest)| rest)
        .to_owned();
    after_at
        .split_once('/')
        .map_or(after_at.clone(), |(host, _)| host.to_owned())
}

/// The local development credentials that `infra/postgres/pgctl.sh` provisions.
fn url(role_of: &str, database_of: &str) -> String {
    let role = format!("bazaar_{role_of}");
    format!(
        "postgres://{role}:{role}@{}/bazaar_{database_of}",
        host_part()
    )
}

#[tokio::test]
async fn every_service_can_open_its_own_database() {
    for service in SERVICES {
        let mut connection = PgConnection::connect(&url(service, service))
            .await
            .unwrap_or_else(|error| panic!("{service} cannot open its own database: {error}"));
        let (name,): (String,) = sqlx::query_as("SELECT current_database()")
            .fetch_one(&mut connection)
            .await
            .expect("query");
        assert_eq!(name, format!("bazaar_{service}"));
    }
}

#[tokio::test]
async fn no_service_can_open_another_services_database() {
    for owner in SERVICES {
        for intruder in SERVICES.iter().filter(|other| **other != owner) {
            let error = PgConnection::connect(&url(intruder, owner))
                .await
                .err()
                .unwrap_or_else(|| panic!("{intruder} opened the {owner} database"));
            let code = error
                .as_database_error()
                .and_then(|db| db.code())
                .map(|code| code.into_owned());
            // 42501: insufficient_privilege ("permission denied for database").
            assert_eq!(
                code.as_deref(),
                Some("42501"),
                "{intruder} -> {owner}: {error}"
            );
        }
    }
}

/// A statement with an array parameter, as the consumers' batch statements have.
const BATCH_STATEMENT: &str = "SELECT n FROM unnest($1::int[]) AS n WHERE n = ANY($1)";

/// Runs `BATCH_STATEMENT` `times` times on `connection` (as one prepared statement), then says
/// how PostgreSQL planned it: (generic plans, custom plans).
async fn plans_of_batch_statement(connection: &mut PgConnection, times: usize) -> (i64, i64) {
    for _ in 0..times {
        sqlx::query(BATCH_STATEMENT)
            .bind(vec![1_i32])
            .fetch_all(&mut *connection)
            .await
            .expect("batch statement");
    }
    sqlx::query_as(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
    )
    .bind(BATCH_STATEMENT)
    .fetch_one(&mut *connection)
    .await
    .expect("the statement is prepared on this connection")
}

#[tokio::test]
async fn a_services_connections_plan_each_prepared_statement_once_unless_configured_otherwise() {
    let (settings, pool) = fresh_messaging_database("plans").await.expect("database");
    assert_eq!(
        settings.plan_cache_mode,
        PlanCacheMode::ForceGenericPlan,
        "the default"
    );

    let mut pooled = pool.acquire().await.expect("pooled connection");
    assert_eq!(
        plans_of_batch_statement(&mut pooled, 8).await,
        (8, 0),
        "a pooled connection"
    );
    drop(pooled);
    let mut session = platform::db::Session::beside(&pool, "test-plans");
    let connection = session.connection().await.expect("session");
    assert_eq!(
        plans_of_batch_statement(connection, 8).await,
        (8, 0),
        "a session beside the pool"
    );
    session.close().await;
    pool.close().await;

    // PostgreSQL's own choice, when configured: it plans the first five executions for their
    // values before it weighs a generic plan (the consumers' statements never got one).
    let auto = platform::config::DatabaseSettings {
        plan_cache_mode: PlanCacheMode::Auto,
        ..settings
    };
    let options = platform::db::connect_options(&auto).expect("options");
    let mut connection = PgConnection::connect_with(&options)
        .await
        .expect("connection");
    let (_, custom) = plans_of_batch_statement(&mut connection, 8).await;
    assert!(custom >= 5, "auto: {custom} custom plans of 8 executions");
    connection.close().await.expect("close");
}
