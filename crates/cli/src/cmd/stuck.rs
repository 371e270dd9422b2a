//! `bazaar stuck`: orders that are not in a final state and have not changed status for a
//! while, grouped by status and age, each with the last event the saga published for it.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use order_rules::OrderStatus;
use serde_json::json;
use uuid::Uuid;

use crate::cmd::timeline::{ordered, progress_of, scan};
use crate::context::Context;
use crate::decode::rfc3339;
use crate::kafka::Kafka;
use crate::output::{Table, json_line};
use crate::services::{self, producer_of};
use crate::time::{parse_duration, short};
use bazaar_saga::Progress;

#[derive(Debug, Args)]
pub struct StuckArgs {
    /// Only orders whose status has not changed for at least this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub older_than: Duration,
    /// List at most this many orders, oldest first (the summary counts all of them).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Do not read Kafka for each order's last event.
    #[arg(long)]
    pub no_events: bool,
    /// The order service's database (overrides --service-db and BAZAAR_ORDER_DATABASE_URL).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

const BUCKETS: &[(u64, &str)] = &[
    (60, "< 1m"),
    (5 * 60, "1m-5m"),
    (15 * 60, "5m-15m"),
    (60 * 60, "15m-1h"),
    (6 * 60 * 60, "1h-6h"),
    (24 * 60 * 60, "6h-24h"),
    (u64::MAX, ">= 24h"),
];

fn bucket(seconds: f64) -> (usize, &'static str) {
    BUCKETS
        .iter()
        .enumerate()
        .find(|(_, (limit, _))| seconds < *limit as f64)
        .map_or((BUCKETS.len() - 1, ">= 24h"), |(i, (_, name))| (i, *name))
}

#[derive(Debug, sqlx::FromRow)]
struct StuckOrder {
    id: Uuid,
    status: String,
    reason: Option<String>,
    created_at: DateTime<Utc>,
    status_since: DateTime<Utc>,
    in_state_secs: f64,
    age_secs: f64,
    total_minor: i64,
    currency: String,
}

pub async fn run(context: &Context, args: StuckArgs) -> anyhow::Result<()> {
    // Which statuses the saga still moves on by itself is the order service's rule (a shipped
    // order waits for the carrier, not for a service).
    let open: Vec<&str> = OrderStatus::ALL
        .into_iter()
        .filter(|status| !status.is_settled())
        .map(OrderStatus::as_str)
        .collect();
    let pool = context
        .connect("order", args.database_url.as_deref())
        .await?;
    // Ages come from the database clock, the one that stamped the orders.
    let orders: Vec<StuckOrder> = sqlx::query_as(
        "SELECT o.id, o.status, o.reason, o.created_at,
                coalesce(h.at, o.created_at) AS status_since,
                extract(epoch FROM now() - coalesce(h.at, o.created_at))::float8 AS in_state_secs,
                extract(epoch FROM now() - o.created_at)::float8 AS age_secs,
                o.total_minor, trim(o.currency) AS currency
           FROM orders o
           LEFT JOIN LATERAL (SELECT at FROM order_status_history
                               WHERE order_id = o.id ORDER BY id DESC LIMIT 1) h ON true
          WHERE o.status = ANY($1)
            AND coalesce(h.at, o.created_at) <= now() - make_interval(secs => $2)
          ORDER BY status_since, o.id",
    )
    .bind(&open)
    .bind(args.older_than.as_secs_f64())
    .fetch_all(&pool)
    .await
    .map_err(|error| anyhow::anyhow!("reading orders from the order database: {error}"))?;

    let mut groups: BTreeMap<(String, usize), (&'static str, usize)> = BTreeMap::new();
    for order in &orders {
        let (index, name) = bucket(order.in_state_secs);
        groups
            .entry((order.status.clone(), index))
            .or_insert((name, 0))
            .1 += 1;
    }
    let shown: Vec<&StuckOrder> = orders.iter().take(args.limit).collect();

    // The last event of each shown order, and what the saga waits for.
    let mut last_events = BTreeMap::new();
    if !args.no_events && !shown.is_empty() {
        let kafka = Kafka::connect(&context.kafka).await?;
        let keys: HashSet<String> = shown.iter().map(|o| o.id.to_string()).collect();
        let earliest = shown.iter().map(|o| o.created_at).min();
        let since = earliest.map(|at| at - chrono::Duration::minutes(1));
        let (found, _) = scan(context, &kafka, &keys, since, false).await?;
        let order_topics: Vec<String> = services::find("order")?
            .consumes
            .iter()
            .map(|topic| context.topic(topic))
            .collect();
        let mut last_ids = Vec::new();
        for (key, events) in found {
            let steps = ordered(events);
            let progress = progress_of(&steps);
            if let Some((last, _)) = steps
                .into_iter()
                .max_by_key(|(decoded, _)| decoded.occurred_at())
            {
                let consumed = order_topics.contains(&last.record.topic);
                if let (true, Ok(metadata)) = (consumed, &last.metadata) {
                    last_ids.push(metadata.event_id);
                }
                last_events.insert(key, (last, progress, consumed.then_some(false)));
            }
        }
        let handled: HashSet<Uuid> = sqlx::query_as::<sqlx::Postgres, (Uuid,)>(
            "SELECT event_id FROM messaging_inbox WHERE event_id = ANY($1)",
        )
        .bind(&last_ids)
        .fetch_all(&pool)
        .await?
        .into_iter()
        .map(|(id,)| id)
        .collect();
        // Whether the order service has handled it (or has nothing to do with it: such events
        // leave no inbox entry); `None` for what it does not consume.
        for (last, _, was_handled) in last_events.values_mut() {
            if was_handled.is_some() {
                let ignored = last
                    .event_type()
                    .and_then(|name| name.parse().ok())
                    .is_some_and(|kind| !bazaar_saga::handles(order_rules::SERVICE, kind));
                *was_handled = Some(
                    ignored
                        || last
                            .metadata
                            .as_ref()
                            .is_ok_and(|m| handled.contains(&m.event_id)),
                );
            }
        }
    }

    if context.json {
        let rows: Vec<serde_json::Value> = shown
            .iter()
            .map(|order| {
                let key = order.id.to_string();
                let last = last_events.get(&key);
                json!({
                    "order_id": key,
                    "status": order.status,
                    "reason": order.reason,
                    "created_at": rfc3339(order.created_at),
                    "status_since": rfc3339(order.status_since),
                    "in_state_secs": order.in_state_secs,
                    "age_secs": order.age_secs,
                    "total_minor": order.total_minor,
                    "currency": order.currency,
                    "last_event": last.map(|(decoded, _, handled)| {
                        let logical = context.logical(&decoded.record.topic);
                        json!({
                            "type": decoded.event_type(),
                            "topic": logical,
                            "service": producer_of(logical),
                            "event_id": decoded.metadata.as_ref().ok().map(|m| m.event_id),
                            "occurred_at": decoded.occurred_at().map(rfc3339),
                            "handled_by_order": handled,
                        })
                    }),
                    "waiting": last.and_then(|(_, progress, _)| match progress {
                        Progress::Waiting { service, message, .. } => Some(json!({"service": service, "message": message})),
                        Progress::Complete { .. } => None,
                    }),
                })
            })
            .collect();
        json_line(&json!({
            "older_than_secs": args.older_than.as_secs_f64(),
            "count": orders.len(),
            "groups": groups.iter().map(|((status, _), (age, count))| json!({"status": status, "in_state": age, "count": count})).collect::<Vec<_>>(),
            "orders": rows,
        }));
        return Ok(());
    }

    if orders.is_empty() {
        println!(
            "no stuck orders: every order is final or changed status within the last {}",
            short(args.older_than)
        );
        return Ok(());
    }
    println!(
        "{} order(s) not final and without a status change for {} or more",
        orders.len(),
        short(args.older_than)
    );
    println!();
    let mut summary = Table::new(["STATUS", "IN STATE", "ORDERS"]).right_aligned(&[2]);
    for ((status, _), (age, count)) in &groups {
        summary.row(vec![status.clone(), (*age).to_owned(), count.to_string()]);
    }
    summary.print();
    println!();
    let mut table = Table::new([
        "ORDER",
        "STATUS",
        "IN STATE",
        "AGE",
        "TOTAL",
        "LAST EVENT",
        "WAITING FOR",
    ]);
    for order in &shown {
        let key = order.id.to_string();
        let (last, waiting) = match last_events.get(&key) {
            Some((decoded, progress, handled)) => {
                let logical = context.logical(&decoded.record.topic);
                let ago = decoded.occurred_at().map_or_else(String::new, |at| {
                    format!(" {} ago", crate::time::short_signed(Utc::now() - at))
                });
                (
                    format!(
                        "{} ({}){ago}{}",
                        decoded.event_type().unwrap_or("?"),
                        producer_of(logical),
                        match handled {
                            Some(true) => ", handled by order",
                            Some(false) => ", not yet handled by order",
                            None => "",
                        }
                    ),
                    progress.describe(),
                )
            }
            None if args.no_events => (String::new(), String::new()),
            None => ("none found".into(), String::new()),
        };
        table.row(vec![
            key,
            order.status.clone(),
            short(Duration::from_secs_f64(order.in_state_secs.max(0.0))),
            short(Duration::from_secs_f64(order.age_secs.max(0.0))),
            format!(
                "{}.{:02} {}",
                order.total_minor / 100,
                order.total_minor % 100,
                order.currency
            ),
            last,
            waiting,
        ]);
    }
    table.print();
    if orders.len() > shown.len() {
        println!("... and {} more (--limit)", orders.len() - shown.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_fall_into_buckets() {
        assert_eq!(bucket(3.0).1, "< 1m");
        assert_eq!(bucket(400.0).1, "5m-15m");
        assert_eq!(bucket(100_000.0).1, ">= 24h");
    }
}
