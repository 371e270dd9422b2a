//! What the benchmark reads from PostgreSQL: order statuses (read-only, from the order
//! service's database), and the server's statement and transaction counters.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// A small pool whose sessions cannot write.
pub async fn read_only_pool(url: &str) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(|connection, _| {
            Box::pin(async move {
                sqlx::query("SET default_transaction_read_only = on")
                    .execute(connection)
                    .await?;
                Ok(())
            })
        })
        .connect(url)
        .await?)
}

/// Final statuses of an order.
pub const FINAL: [&str; 3] = ["shipping_scheduled", "rejected", "cancelled"];

/// How many of `orders` are in a final status now, and how many of those were rejected or
/// cancelled.
pub async fn final_count(order_db: &PgPool, orders: &[Uuid]) -> anyhow::Result<(i64, i64)> {
    let row: (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = ANY($2)),
                count(*) FILTER (WHERE status IN ('rejected', 'cancelled'))
           FROM orders WHERE id = ANY($1)",
    )
    .bind(orders)
    .bind(FINAL.as_slice())
    .fetch_one(order_db)
    .await?;
    Ok(row)
}

/// Per status: how many of `orders` reached it within [from, to], and in all.
pub async fn status_counts(
    order_db: &PgPool,
    orders: &[Uuid],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<BTreeMap<String, (i64, i64)>> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT status, count(*) FILTER (WHERE at BETWEEN $2 AND $3), count(*)
           FROM order_status_history WHERE order_id = ANY($1) GROUP BY status",
    )
    .bind(orders)
    .bind(from)
    .bind(to)
    .fetch_all(order_db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(status, within, all)| (status, (within, all)))
        .collect())
}

/// When each of `orders` that reached `status` had it written into its history (the row's
/// `clock_timestamp()`, a moment before its transaction commits and its NOTIFY goes out).
pub async fn status_written_at(
    order_db: &PgPool,
    orders: &[Uuid],
    status: &str,
) -> anyhow::Result<HashMap<Uuid, DateTime<Utc>>> {
    let rows: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT order_id, min(at) FROM order_status_history
          WHERE order_id = ANY($1) AND status = $2 GROUP BY order_id",
    )
    .bind(orders)
    .bind(status)
    .fetch_all(order_db)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Waits until every order is final or the deadline passes; returns how long it took (None
/// at the deadline) and the count still open.
pub async fn wait_final(
    order_db: &PgPool,
    orders: &[Uuid],
    since: Instant,
    deadline: Duration,
) -> anyhow::Result<(Option<Duration>, i64)> {
    loop {
        let (done, _) = final_count(order_db, orders).await?;
        let open = orders.len() as i64 - done;
        if open == 0 {
            return Ok((Some(since.elapsed()), 0));
        }
        if since.elapsed() > deadline {
            return Ok((None, open));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One statement's calls in a database over a window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatementCalls {
    pub database: String,
    pub query: String,
    pub calls: i64,
}

/// Statement and transaction counters of the service databases.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Database → committed + rolled-back transactions (pg_stat_database; cumulative).
    pub transactions: BTreeMap<String, i64>,
    /// Since the last reset (pg_stat_statements).
    pub statements: Vec<StatementCalls>,
}

/// Reads pg_stat_statements and pg_stat_database as role bazaar_bench (pg_read_all_stats).
#[derive(Debug, Clone)]
pub struct Stats {
    pool: PgPool,
    databases: Vec<String>,
}

impl Stats {
    pub async fn connect(url: &str, databases: Vec<String>) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Self { pool, databases })
    }

    /// Whether the server has pg_stat_statements loaded and readable.
    pub async fn available(&self) -> Result<(), String> {
        sqlx::query("SELECT 1 FROM pg_stat_statements LIMIT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|error| error.to_string())
    }

    /// Databases on the server: each costs PostgreSQL's autovacuum launcher a worker start per
    /// `autovacuum_naptime`, whether anyone uses it or not.
    pub async fn database_count(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM pg_database")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn reset(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn read(&self) -> anyhow::Result<Counters> {
        let transactions: Vec<(String, i64)> = sqlx::query_as(
            "SELECT datname::text, (xact_commit + xact_rollback)::bigint
               FROM pg_stat_database WHERE datname = ANY($1)",
        )
        .bind(&self.databases)
        .fetch_all(&self.pool)
        .await?;
        let statements: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT d.datname::text, s.query, sum(s.calls)::bigint
               FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
              WHERE d.datname = ANY($1)
              GROUP BY 1, 2",
        )
        .bind(&self.databases)
        .fetch_all(&self.pool)
        .await?;
        Ok(Counters {
            transactions: transactions.into_iter().collect(),
            statements: statements
                .into_iter()
                .map(|(database, query, calls)| StatementCalls {
                    database,
                    query,
                    calls,
                })
                .collect(),
        })
    }
}

/// Whether a statement is transaction control rather than work.
pub fn is_transaction_control(query: &str) -> bool {
    let first = query
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    matches!(
        first.trim_end_matches(';'),
        "BEGIN" | "COMMIT" | "ROLLBACK" | "START" | "END" | "SAVEPOINT" | "RELEASE"
    )
}

/// pgbench's simple-update workload for `seconds` on a scratch database made and dropped with
/// the admin role (`postgres://bazaar_admin:…/postgres`); returns transactions per second.
pub async fn pgbench(admin_url: &str, seconds: u32) -> anyhow::Result<f64> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(admin_url)
        .await?;
    // The name pattern of test databases, so `pgctl.sh drop-test-dbs` removes a leftover.
    let name = format!("bazaar_test_pgbench_{}", Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await?;
    let mut url = reqwest::Url::parse(admin_url)?;
    url.set_path(&format!("/{name}"));
    let url = url.to_string();
    let binary = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin/pgbench"))
        .find(|path| path.exists())
        .ok_or_else(|| anyhow::anyhow!("pgbench not found under /usr/lib/postgresql"))?;
    let outcome = tokio::task::spawn_blocking(move || {
        crate::run(
            std::process::Command::new(&binary).args(["-i", "-q", "-s", "1", &url]),
            "pgbench -i",
        )?;
        let run = crate::run(
            std::process::Command::new(&binary).args([
                "-N",
                "-n",
                "-c",
                "4",
                "-j",
                "2",
                "-T",
                &seconds.to_string(),
                &url,
            ]),
            "pgbench",
        )?;
        let text = String::from_utf8_lossy(&run.stdout);
        text.lines()
            .find(|line| line.starts_with("tps = "))
            .and_then(|line| line.trim_start_matches("tps = ").split_whitespace().next())
            .and_then(|tps| tps.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no tps in pgbench output: {text}"))
    })
    .await?;
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
    if let Err(error) = dropped {
        eprintln!("could not drop {name}: {error}");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_control_is_told_apart() {
        assert!(is_transaction_control("BEGIN"));
        assert!(is_transaction_control("commit"));
        assert!(!is_transaction_control("SELECT 1"));
        assert!(!is_transaction_control("INSERT INTO t VALUES ($1)"));
    }
}
