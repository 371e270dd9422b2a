//! `bazaar rebuild`: rebuild a read model from its topic into a fresh table, then swap it in.
//!
//! The order service's catalog replica is rebuilt with the service's own rule, the database
//! function `apply_product_snapshot` of its migrations (which its consumer calls for every
//! snapshot), so the tool holds no copy of it. The function writes to an unqualified
//! `catalog_replica`: on a connection whose `search_path` names a scratch schema, that is the
//! fresh table.
//! The swap happens in one transaction that first locks the live table against writers (the
//! service's consumer waits), applies what was published meanwhile, compares old and new, and
//! renames. Readers see the old table until the commit and the new one after it.

use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use events::Event;
use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::context::Context;
use crate::decode::Decoder;
use crate::exit::Exit;
use crate::kafka::{Kafka, Range, Watermarks};
use crate::output::{json_line, progress};
use crate::services::SERVICES;
use crate::time::short;

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The service that keeps the projection (see `bazaar services`).
    pub service: String,
    /// The projection, e.g. catalog-replica for order.
    pub projection: String,
    /// Keep the replaced table as `<table>_old` instead of dropping it.
    #[arg(long)]
    pub keep_old: bool,
    /// The service's database (overrides --service-db and BAZAAR_<SVC>_DATABASE_URL).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

const TABLE: &str = "catalog_replica";
const SCRATCH_SCHEMA: &str = "bazaar_rebuild";
const TOPIC: &str = "product-snapshots";
/// Snapshots applied per transaction while building the fresh table.
const BATCH: usize = 200;

/// Read models that look rebuildable but are not pure functions of retained events.
const NOT_REBUILDABLE: &[(&str, &str, &str)] = &[(
    "notification",
    "feed",
    "the notification feed keeps what no event carries (read marks, and the e-mails in \
     outgoing_emails reference its rows), and its source topics keep 7 days, so a rebuilt feed \
     would drop older notices and read marks and orphan or resend e-mails; replay the \
     notification consumer instead (`bazaar replay notification --since ...`), which is \
     idempotent per event",
)];

pub async fn run(context: &Context, args: RebuildArgs) -> anyhow::Result<()> {
    let service = context.service(&args.service)?;
    if let Some((_, _, why)) = NOT_REBUILDABLE
        .iter()
        .find(|(s, p, _)| *s == service.name && *p == args.projection)
    {
        return Err(Exit::Refused(format!(
            "{} {} cannot be rebuilt from the topics: {why}",
            service.name, args.projection
        ))
        .into());
    }
    if !service.projections.contains(&args.projection.as_str()) {
        let available: Vec<String> = SERVICES
            .iter()
            .flat_map(|s| s.projections.iter().map(move |p| format!("{} {p}", s.name)))
            .collect();
        anyhow::bail!(
            "{} has no projection {:?} that can be rebuilt; available: {}",
            service.name,
            args.projection,
            available.join(", ")
        );
    }
    // The table above lists only what is implemented here.
    catalog_replica(context, &args).await
}

/// What a swap changed, business columns only (timestamps always differ).
#[derive(Debug, Default, sqlx::FromRow)]
struct Diff {
    rows_before: i64,
    rows_after: i64,
    added: i64,
    removed: i64,
    changed: i64,
}

struct Rebuilder<'a> {
    decoder: Decoder,
    kafka: &'a Kafka,
    topic: String,
    /// The schema of the live table, where the order service's migrations put the function.
    schema: String,
    applied: u64,
    tombstones: u64,
}

impl Rebuilder<'_> {
    /// Applies `ranges` to the scratch table through `connection`; each batch commits unless
    /// `in_transaction` (the swap), where everything joins the caller's transaction.
    async fn apply(
        &mut self,
        connection: &mut PgConnection,
        ranges: Vec<Range>,
        in_transaction: bool,
        bar: &indicatif::ProgressBar,
    ) -> anyhow::Result<()> {
        let mut receiver = self.kafka.read(ranges);
        let mut pending: Vec<events::ProductSnapshot> = Vec::with_capacity(BATCH);
        while let Some(record) = receiver.recv().await {
            let record = record?;
            bar.inc(1);
            let position = format!("{}[{}]@{}", self.topic, record.partition, record.offset);
            if record.payload.is_none() {
                self.tombstones += 1;
                continue;
            }
            let decoded = self.decoder.decode(record).await?;
            match decoded.event {
                Ok(Event::ProductSnapshot(snapshot)) => pending.push(snapshot),
                Ok(other) => anyhow::bail!(
                    "{position} holds a {}, not a ProductSnapshot; nothing was swapped",
                    other.type_name()
                ),
                Err(error) => {
                    anyhow::bail!("{position} cannot be decoded: {error}; nothing was swapped")
                }
            }
            if pending.len() >= BATCH {
                self.flush(connection, &mut pending, in_transaction).await?;
            }
        }
        self.flush(connection, &mut pending, in_transaction).await
    }

    async fn flush(
        &mut self,
        connection: &mut PgConnection,
        pending: &mut Vec<events::ProductSnapshot>,
        in_transaction: bool,
    ) -> anyhow::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        if in_transaction {
            return self.apply_each(connection, pending).await;
        }
        let mut tx = connection.begin().await?;
        self.apply_each(&mut tx, pending).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies each snapshot with the order service's rule, to the table the search path finds.
    async fn apply_each(
        &mut self,
        connection: &mut PgConnection,
        pending: &mut Vec<events::ProductSnapshot>,
    ) -> anyhow::Result<()> {
        let statement = format!("SELECT {}.apply_product_snapshot($1)", self.schema);
        for snapshot in pending.drain(..) {
            sqlx::query(sqlx::AssertSqlSafe(statement.as_str()))
                .bind(sqlx::types::Json(&snapshot))
                .execute(&mut *connection)
                .await
                .context(
                    "applying a snapshot with the order service's apply_product_snapshot \
                     (has the order service migrated to this version?)",
                )?;
            self.applied += 1;
        }
        Ok(())
    }
}

fn ranges(topic: &str, from: &[Watermarks], to: &[Watermarks]) -> Vec<Range> {
    to.iter()
        .map(|mark| Range {
            topic: topic.to_owned(),
            partition: mark.partition,
            start: from
                .iter()
                .find(|m| m.partition == mark.partition)
                .map_or(mark.low, |m| m.high)
                .max(mark.low),
            end: Some(mark.high),
        })
        .collect()
}

async fn catalog_replica(context: &Context, args: &RebuildArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let url = context.database_url("order", args.database_url.as_deref());
    let pool = context.connect("order", Some(&url)).await?;
    // A connection of its own: its search_path is changed for the build.
    let mut connection = pool.acquire().await?.detach();
    // The scratch schema is shared by name, so only one rebuild at a time may touch it.
    let (locked,): (bool,) =
        sqlx::query_as("SELECT pg_try_advisory_lock(hashtext('bazaar rebuild catalog_replica'))")
            .fetch_one(&mut connection)
            .await?;
    if !locked {
        return Err(Exit::Refused(
            "another rebuild of the catalog replica is running on this database".into(),
        )
        .into());
    }
    let outcome = build_and_swap(context, args, &mut connection).await;
    // Whatever happened, leave no scratch schema behind.
    let cleanup = sqlx::raw_sql(
        "DROP SCHEMA IF EXISTS bazaar_rebuild CASCADE; SELECT pg_advisory_unlock_all()",
    )
    .execute(&mut connection)
    .await;
    let _ = connection.close().await;
    let (diff, applied, tombstones, messages) = outcome?;
    cleanup.context("dropping the scratch schema")?;
    if context.json {
        json_line(&json!({
            "service": "order",
            "projection": "catalog-replica",
            "table": TABLE,
            "messages": messages,
            "snapshots_applied": applied,
            "tombstones": tombstones,
            "rows_before": diff.rows_before,
            "rows_after": diff.rows_after,
            "added": diff.added,
            "removed": diff.removed,
            "changed": diff.changed,
            "kept_old": args.keep_old.then(|| format!("{TABLE}_old")),
            "elapsed_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }));
    } else {
        println!(
            "rebuilt order {TABLE} from {messages} message(s) of {TOPIC} in {}: {} row(s) \
             (was {}); {} added, {} removed, {} changed{}",
            short(started.elapsed()),
            diff.rows_after,
            diff.rows_before,
            diff.added,
            diff.removed,
            diff.changed,
            if args.keep_old {
                format!("; the old table is {TABLE}_old")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

async fn build_and_swap(
    context: &Context,
    args: &RebuildArgs,
    connection: &mut PgConnection,
) -> anyhow::Result<(Diff, u64, u64, u64)> {
    let live: Option<(String,)> = sqlx::query_as(
        "SELECT quote_ident(n.nspname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid = to_regclass($1)",
    )
    .bind(TABLE)
    .fetch_optional(&mut *connection)
    .await?;
    let Some((schema,)) = live else {
        return Err(Exit::NotFound(format!(
            "no {TABLE} table in this database (is it the order service's? has it migrated?)"
        ))
        .into());
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {SCRATCH_SCHEMA} CASCADE;
         CREATE SCHEMA {SCRATCH_SCHEMA};
         CREATE TABLE {SCRATCH_SCHEMA}.{TABLE} (LIKE {schema}.{TABLE} INCLUDING ALL);
         SET search_path = {SCRATCH_SCHEMA}"
    )))
    .execute(&mut *connection)
    .await
    .context("creating the fresh table")?;

    let kafka = Kafka::connect(&context.kafka).await?;
    let topic = context.topic(TOPIC);
    let count = kafka.require_partitions(&topic).await?;
    let first = kafka.watermarks(&topic, count).await?;
    let mut rebuilder = Rebuilder {
        decoder: Decoder::unmasked(&context.kafka),
        kafka: &kafka,
        topic: topic.clone(),
        schema: schema.clone(),
        applied: 0,
        tombstones: 0,
    };
    let initial = ranges(&topic, &[], &first);
    let total: u64 = initial.iter().map(Range::len).sum();
    let bar = progress(context.json, total, "replaying product-snapshots");
    rebuilder.apply(connection, initial, false, &bar).await?;

    let mut tx = connection.begin().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL lock_timeout = '15s';
         LOCK TABLE {schema}.{TABLE} IN EXCLUSIVE MODE"
    )))
    .execute(&mut *tx)
    .await
    .context("locking the live table against writers")?;
    // Snapshots the service applied to the live table while we were building.
    let last = kafka.watermarks(&topic, count).await?;
    let tail = ranges(&topic, &first, &last);
    bar.inc_length(tail.iter().map(Range::len).sum());
    bar.set_message("swapping");
    rebuilder.apply(&mut tx, tail, true, &bar).await?;
    bar.finish_and_clear();

    let diff: Diff = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT (SELECT count(*) FROM {schema}.{TABLE}) AS rows_before,
                (SELECT count(*) FROM {SCRATCH_SCHEMA}.{TABLE}) AS rows_after,
                count(*) FILTER (WHERE o.sku IS NULL) AS added,
                count(*) FILTER (WHERE n.sku IS NULL) AS removed,
                count(*) FILTER (WHERE o.sku IS NOT NULL AND n.sku IS NOT NULL
                    AND to_jsonb(o) - 'updated_at' IS DISTINCT FROM to_jsonb(n) - 'updated_at') AS changed
           FROM {schema}.{TABLE} o FULL JOIN {SCRATCH_SCHEMA}.{TABLE} n ON n.sku = o.sku"
    )))
    .fetch_one(&mut *tx)
    .await
    .context("comparing the old and the new table")?;

    let old_indexes = indexes(&mut tx, &schema).await?;
    if args.keep_old {
        let mut statements = format!(
            "DROP TABLE IF EXISTS {schema}.{TABLE}_old;
             ALTER TABLE {schema}.{TABLE} RENAME TO {TABLE}_old;"
        );
        for (name, _) in &old_indexes {
            let renamed: (String,) = sqlx::query_as("SELECT quote_ident(left($1, 59) || '_old')")
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
            statements.push_str(&format!(
                "ALTER INDEX {schema}.{} RENAME TO {};",
                quote(&mut tx, name).await?,
                renamed.0
            ));
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(statements))
            .execute(&mut *tx)
            .await
            .context("keeping the old table")?;
    } else {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {schema}.{TABLE}")))
            .execute(&mut *tx)
            .await
            .context("dropping the old table (does something depend on it?)")?;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE {SCRATCH_SCHEMA}.{TABLE} SET SCHEMA {schema}"
    )))
    .execute(&mut *tx)
    .await
    .context("moving the new table in")?;
    // LIKE names copied indexes after their columns; give them the names migrations know.
    for (new_name, definition) in indexes(&mut tx, &schema).await? {
        let Some((old_name, _)) = old_indexes.iter().find(|(_, d)| *d == definition) else {
            continue;
        };
        if *old_name != new_name {
            let statement = format!(
                "ALTER INDEX {schema}.{} RENAME TO {}",
                quote(&mut tx, &new_name).await?,
                quote(&mut tx, old_name).await?
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .context("renaming an index")?;
        }
    }
    tx.commit().await.context("swapping the tables")?;
    let messages = rebuilder.applied + rebuilder.tombstones;
    Ok((diff, rebuilder.applied, rebuilder.tombstones, messages))
}

/// Indexes of the live table as (name, definition without its name and schema).
async fn indexes(
    connection: &mut PgConnection,
    schema: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.relname::text, pg_get_indexdef(i.oid)
           FROM pg_index x
           JOIN pg_class i ON i.oid = x.indexrelid
           JOIN pg_class t ON t.oid = x.indrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
          WHERE quote_ident(n.nspname) = $1 AND t.relname = $2",
    )
    .bind(schema)
    .bind(TABLE)
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, definition)| {
            // "CREATE UNIQUE INDEX name ON schema.table USING btree (sku)" → "UNIQUE|USING btree (sku)"
            let (head, tail) = definition.split_once(" ON ").unwrap_or(("", &definition));
            let unique = head.contains("UNIQUE");
            let columns = tail.split_once(" USING ").map_or(tail, |(_, rest)| rest);
            (name, format!("{unique}|{columns}"))
        })
        .collect())
}

async fn quote(connection: &mut PgConnection, name: &str) -> anyhow::Result<String> {
    let (quoted,): (String,) = sqlx::query_as("SELECT quote_ident($1)")
        .bind(name)
        .fetch_one(&mut *connection)
        .await?;
    Ok(quoted)
}
