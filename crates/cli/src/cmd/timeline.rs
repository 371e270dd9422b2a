//! `bazaar timeline <order-id>`: one order's events across the saga's topics, in causal order,
//! with who produced each, when, the time between steps, and where the saga waits.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::json;
use uuid::Uuid;

use crate::context::Context;
use crate::decode::{Decoded, Decoder, event_body, rfc3339, summary};
use crate::exit::Exit;
use crate::kafka::{Kafka, Range};
use crate::output::{Table, json_line, progress};
use crate::partitioner::partition_for;
use crate::saga::{self, Node};
use crate::services::{ORDER_TOPICS, producer_of};
use crate::time::{Since, short_signed};
use bazaar_saga::Progress;
use events::EventType;

#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// The order id (the Kafka key of every saga event).
    pub order_id: String,
    /// Scan from this time (2026-11-26T10:00:00Z, or 2h back from now) instead of the oldest
    /// message.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Scan every partition instead of only the one the order id hashes to.
    #[arg(long)]
    pub all_partitions: bool,
}

/// Reads the order-keyed topics for the given keys: the partition each key hashes to (or all
/// partitions), from `since` to the current end.
pub async fn scan(
    context: &Context,
    kafka: &Kafka,
    keys: &HashSet<String>,
    since: Option<DateTime<Utc>>,
    all_partitions: bool,
) -> anyhow::Result<(HashMap<String, Vec<Decoded>>, u64)> {
    let mut ranges = Vec::new();
    for topic in ORDER_TOPICS.iter() {
        let full = context.topic(topic);
        let Some(count) = kafka.partition_count(&full).await? else {
            continue;
        };
        let marks = kafka.watermarks(&full, count).await?;
        let by_time = match since {
            Some(time) => Some(
                kafka
                    .offsets_for_time(&full, count, time.timestamp_millis())
                    .await?,
            ),
            None => None,
        };
        let wanted: HashSet<i32> = keys.iter().map(|key| partition_for(key, count)).collect();
        for mark in marks {
            if !all_partitions && !wanted.contains(&mark.partition) {
                continue;
            }
            let start = by_time
                .as_ref()
                .map_or(Some(mark.low), |offsets| {
                    offsets
                        .get(usize::try_from(mark.partition).unwrap_or(usize::MAX))
                        .copied()
                        .flatten()
                })
                .unwrap_or(mark.high);
            ranges.push(Range {
                topic: full.clone(),
                partition: mark.partition,
                start: start.max(mark.low),
                end: Some(mark.high),
            });
        }
    }
    let total: u64 = ranges.iter().map(Range::len).sum();
    let bar = progress(context.json, total, "scanning the saga topics");
    let decoder = Decoder::new(context);
    let mut receiver = kafka.read(ranges);
    let mut found: HashMap<String, Vec<Decoded>> = HashMap::new();
    let mut scanned = 0;
    while let Some(record) = receiver.recv().await {
        let record = record?;
        scanned += 1;
        bar.inc(1);
        let Some(key) = record.key.clone().filter(|key| keys.contains(key)) else {
            continue;
        };
        let decoded = decoder.decode(record).await?;
        found.entry(key).or_default().push(decoded);
    }
    bar.finish_and_clear();
    Ok((found, scanned))
}

/// Events in causal order with the step number of each one's cause.
pub fn ordered(events: Vec<Decoded>) -> Vec<(Decoded, Option<usize>)> {
    let nodes: Vec<Node> = events
        .iter()
        .map(|decoded| {
            let metadata = decoded.metadata.as_ref().ok();
            Node {
                // Unreadable metadata still gets a place, by time, with no lineage.
                event_id: metadata.map_or_else(Uuid::now_v7, |m| m.event_id),
                causation_id: metadata.and_then(|m| m.causation_id),
                occurred_at: decoded.occurred_at().unwrap_or_default(),
                position: (
                    decoded.record.topic.clone(),
                    decoded.record.partition,
                    decoded.record.offset,
                ),
            }
        })
        .collect();
    let order = saga::causal_order(&nodes);
    let step_of: HashMap<Uuid, usize> = order
        .iter()
        .enumerate()
        .map(|(step, &i)| (nodes[i].event_id, step + 1))
        .collect();
    let causes: Vec<Option<usize>> = order
        .iter()
        .map(|&i| {
            nodes[i]
                .causation_id
                .and_then(|cause| step_of.get(&cause).copied())
        })
        .collect();
    let mut slots: Vec<Option<Decoded>> = events.into_iter().map(Some).collect();
    order
        .iter()
        .zip(causes)
        .filter_map(|(&i, cause)| slots[i].take().map(|decoded| (decoded, cause)))
        .collect()
}

pub fn progress_of(events: &[(Decoded, Option<usize>)]) -> Progress {
    let seen: BTreeSet<EventType> = events
        .iter()
        .filter_map(|(decoded, _)| decoded.event_type()?.parse().ok())
        .collect();
    bazaar_saga::progress(&seen)
}

pub async fn run(context: &Context, args: TimelineArgs) -> anyhow::Result<()> {
    let since = args
        .since
        .as_deref()
        .map(|text| Since::parse(text, false, Utc::now()))
        .transpose()
        .map_err(|message| anyhow::anyhow!("--since: {message}"))?;
    let since = match since {
        Some(Since::Time(time)) => Some(time),
        _ => None,
    };
    let kafka = Kafka::connect(&context.kafka).await?;
    let keys = HashSet::from([args.order_id.clone()]);
    let (mut found, scanned) = scan(context, &kafka, &keys, since, args.all_partitions).await?;
    let events = found.remove(&args.order_id).unwrap_or_default();
    if events.is_empty() {
        return Err(Exit::NotFound(format!(
            "no events with key {} in {} ({scanned} message(s) scanned in the partition(s) it \
             hashes to; --all-partitions scans everything)",
            args.order_id,
            ORDER_TOPICS.join(", ")
        ))
        .into());
    }
    let steps = ordered(events);
    let progress = progress_of(&steps);
    let now = Utc::now();
    // Where to mark a wait: after the last event of the type the next step follows.
    let waiting_after = match &progress {
        Progress::Waiting { after, .. } => steps
            .iter()
            .rposition(|(decoded, _)| decoded.event_type() == after.map(EventType::name))
            .map_or(steps.len(), |i| i + 1),
        Progress::Complete { .. } => 0,
    };
    let waiting_since = steps
        .get(waiting_after.wrapping_sub(1))
        .and_then(|(decoded, _)| decoded.occurred_at());

    // The checkout's trace is the first event's (OrderCreated carries the request's
    // traceparent); events the payment worker publishes outside any consumed event start
    // traces of their own. Distinct ids, in order of first appearance.
    let mut trace_ids: Vec<String> = Vec::new();
    for (decoded, _) in &steps {
        if let Ok(metadata) = &decoded.metadata {
            let id = metadata.traceparent.trace_id_hex();
            if !trace_ids.contains(&id) {
                trace_ids.push(id);
            }
        }
    }

    if context.json {
        let mut previous: Option<DateTime<Utc>> = None;
        let times: Vec<Option<DateTime<Utc>>> =
            steps.iter().map(|(d, _)| d.occurred_at()).collect();
        let rows: Vec<serde_json::Value> = steps
            .iter()
            .enumerate()
            .map(|(i, (decoded, cause))| {
                let at = decoded.occurred_at();
                let since_previous = at.zip(previous).map(|(a, p)| (a - p).num_milliseconds());
                previous = at.or(previous);
                let since_cause = cause
                    .and_then(|step| times.get(step - 1).copied().flatten())
                    .zip(at)
                    .map(|(c, a)| (a - c).num_milliseconds());
                let logical = context.logical(&decoded.record.topic);
                json!({
                    "step": i + 1,
                    "topic": logical,
                    "partition": decoded.record.partition,
                    "offset": decoded.record.offset,
                    "service": producer_of(logical),
                    "type": decoded.event_type(),
                    "event_id": decoded.metadata.as_ref().ok().map(|m| m.event_id),
                    "causation_id": decoded.metadata.as_ref().ok().and_then(|m| m.causation_id),
                    "trace_id": decoded.metadata.as_ref().ok().map(|m| m.traceparent.trace_id_hex()),
                    "cause_step": cause,
                    "occurred_at": at.map(rfc3339),
                    "since_previous_ms": since_previous,
                    "since_cause_ms": since_cause,
                    "summary": decoded.event.as_ref().ok().map(summary),
                    "event": decoded.event.as_ref().ok().map(event_body),
                })
            })
            .collect();
        let state = match &progress {
            Progress::Complete { message, .. } => json!({"state": "complete", "message": message}),
            Progress::Waiting {
                service, message, ..
            } => json!({
                "state": "waiting",
                "service": service,
                "message": message,
                "after_step": waiting_after,
                "waiting_ms": waiting_since.map(|at| (now - at).num_milliseconds()),
            }),
        };
        json_line(&json!({
            "order_id": args.order_id,
            "trace_id": trace_ids.first(),
            "trace_ids": trace_ids,
            "scanned": scanned,
            "events": rows,
            "progress": state,
        }));
        return Ok(());
    }

    let first = steps.first().and_then(|(d, _)| d.occurred_at());
    let last = steps.iter().filter_map(|(d, _)| d.occurred_at()).max();
    println!(
        "order {}: {} event(s){}",
        args.order_id,
        steps.len(),
        first.zip(last).map_or_else(String::new, |(f, l)| format!(
            ", {} from first to last",
            short_signed(l - f)
        ))
    );
    if let Some((trace, others)) = trace_ids.split_first() {
        if others.is_empty() {
            println!("trace {trace}");
        } else {
            println!("trace {trace} (also {})", others.join(", "));
        }
    }
    println!();
    let mut table = Table::new([
        "#",
        "TIME (UTC)",
        "+PREV",
        "SERVICE",
        "EVENT",
        "CAUSE",
        "DETAILS",
    ])
    .right_aligned(&[0, 2]);
    let mut previous: Option<DateTime<Utc>> = None;
    for (i, (decoded, cause)) in steps.iter().enumerate() {
        let at = decoded.occurred_at();
        let delta = at
            .zip(previous)
            .map_or_else(String::new, |(a, p)| format!("+{}", short_signed(a - p)));
        previous = at.or(previous);
        let logical = context.logical(&decoded.record.topic);
        let details = match &decoded.event {
            Ok(event) => summary(event),
            Err(error) => format!("({error})"),
        };
        let cause = match (
            cause,
            decoded.metadata.as_ref().ok().and_then(|m| m.causation_id),
        ) {
            (Some(step), _) => format!("#{step}"),
            (None, Some(_)) => "elsewhere".into(),
            (None, None) => String::new(),
        };
        table.row(vec![
            (i + 1).to_string(),
            at.map_or_else(
                || "?".into(),
                |t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            ),
            delta,
            producer_of(logical).to_owned(),
            decoded.event_type().unwrap_or("?").to_owned(),
            cause,
            details,
        ]);
    }
    let rendered = table.render();
    for (line_number, line) in rendered.lines().enumerate() {
        println!("{line}");
        if line_number == waiting_after
            && let Progress::Waiting {
                service, message, ..
            } = &progress
        {
            let waited = waiting_since
                .map_or_else(String::new, |at| format!(" for {}", short_signed(now - at)));
            println!("   ... waiting for {service}{waited}: {message}");
        }
    }
    if let Progress::Complete { message, .. } = &progress {
        println!("\nsaga complete: {message}");
    }
    Ok(())
}
