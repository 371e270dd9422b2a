//! Each service owns a database that no other service's role can open.

use bazaar_integration_tests::admin_database_url;
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
