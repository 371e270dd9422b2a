//! `bazaar replay`: rewind a service's consumer group so it reprocesses history.
//!
//! First a dry run: the range is read with a scratch consumer (nothing committed) and each
//! event id is looked up in the service's inbox, so the operator sees what will be skipped as
//! already handled. Then, once confirmed and only while the group has no live members, the
//! group's offsets are committed back to the start, and the tool follows the group's commits
//! until the service has read up to the end offsets taken at the start.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::context::Context;
use crate::exit::Exit;
use crate::kafka::{Kafka, Range};
use crate::output::{Table, confirm, json_line, progress};
use crate::time::{Since, parse_duration, short};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The service whose consumer group is rewound (order, inventory, payment, ...).
    pub service: String,
    /// Where to rewind to: a time (2026-11-26T10:00:00Z), a duration back from now (30m),
    /// `beginning`, or an offset applied to every partition (1200).
    #[arg(long, value_name = "TIME|OFFSET")]
    pub since: String,
    /// Only these of the service's topics (repeatable).
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// Show what would be reprocessed, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rewind without asking (needed when not on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Return once the offsets are reset instead of waiting for the service to catch up.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting for the service to catch up after this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// The service's database, for its inbox (overrides --service-db and
    /// BAZAAR_<SVC>_DATABASE_URL).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// One partition of the replay.
#[derive(Debug, Clone)]
struct PartitionPlan {
    topic: String,
    full_topic: String,
    partition: i32,
    low: i64,
    high: i64,
    start: i64,
    committed: Option<i64>,
}

impl PartitionPlan {
    /// The offset to commit: only ever backwards. A group behind the start (or without
    /// commits, so reading from the oldest) reads the whole range anyway.
    fn rewind_to(&self) -> Option<i64> {
        self.committed
            .filter(|committed| *committed > self.start)
            .map(|_| self.start)
    }

    /// Where the group reads from once reset.
    fn from(&self) -> i64 {
        self.rewind_to()
            .or(self.committed)
            .unwrap_or(self.low)
            .max(self.low)
    }

    fn remaining(&self, committed: Option<i64>) -> i64 {
        let from = self.from();
        let at = committed.unwrap_or(from).clamp(from, self.high.max(from));
        self.high.max(from) - at
    }
}

#[derive(Debug, Default, Clone)]
struct TypeCount {
    events: u64,
    handled: u64,
}

pub async fn run(context: &Context, args: ReplayArgs) -> anyhow::Result<()> {
    let service = context.service(&args.service)?;
    let group = context.group_of(service.name);
    for topic in &args.topics {
        if !service.consumes.contains(&topic.as_str()) {
            anyhow::bail!(
                "{} does not consume {topic:?}; it consumes {}",
                service.name,
                service.consumes.join(", ")
            );
        }
    }
    let topics: Vec<&str> = service
        .consumes
        .iter()
        .copied()
        .filter(|topic| args.topics.is_empty() || args.topics.iter().any(|t| t == topic))
        .collect();
    let since = Since::parse(&args.since, true, Utc::now())
        .map_err(|message| anyhow::anyhow!("--since: {message}"))?;
    let pool = context
        .connect(service.name, args.database_url.as_deref())
        .await?;
    let kafka = Kafka::connect(&context.kafka).await?;

    let mut plan = Vec::new();
    for topic in &topics {
        let full_topic = context.topic(topic);
        let Some(count) = kafka.partition_count(&full_topic).await? else {
            eprintln!("note: {full_topic} does not exist; skipped");
            continue;
        };
        let marks = kafka.watermarks(&full_topic, count).await?;
        let by_time = match since {
            Since::Time(time) => Some(
                kafka
                    .offsets_for_time(&full_topic, count, time.timestamp_millis())
                    .await?,
            ),
            _ => None,
        };
        let partitions: Vec<(String, i32)> = marks
            .iter()
            .map(|mark| (full_topic.clone(), mark.partition))
            .collect();
        let committed = kafka.committed(&group, &partitions).await?;
        for mark in marks {
            let start = match since {
                Since::Beginning => mark.low,
                Since::Offset(offset) => offset.clamp(mark.low, mark.high),
                Since::Time(_) => by_time
                    .as_ref()
                    .and_then(|offsets| {
                        offsets.get(usize::try_from(mark.partition).unwrap_or(usize::MAX))
                    })
                    .copied()
                    .flatten()
                    .unwrap_or(mark.high)
                    .max(mark.low),
            };
            plan.push(PartitionPlan {
                topic: (*topic).to_owned(),
                full_topic: full_topic.clone(),
                partition: mark.partition,
                low: mark.low,
                high: mark.high,
                start,
                committed: committed
                    .get(&(full_topic.clone(), mark.partition))
                    .copied()
                    .flatten(),
            });
        }
    }

    let (by_type, per_topic) = dry_run(context, &kafka, &pool, service.name, &plan).await?;
    let events: u64 = by_type.values().map(|count| count.events).sum();
    let handled: u64 = by_type.values().map(|count| count.handled).sum();
    let rewinds: Vec<&PartitionPlan> = plan
        .iter()
        .filter(|partition| partition.rewind_to().is_some())
        .collect();
    let mut report = json!({
        "service": service.name,
        "group": group,
        "since": args.since,
        "since_resolved": match since {
            Since::Beginning => json!("beginning"),
            Since::Time(time) => json!(crate::decode::rfc3339(time)),
            Since::Offset(offset) => json!(offset),
        },
        "topics": per_topic.iter().map(|(topic, (partitions, count))| json!({
            "topic": topic, "partitions": partitions, "events": count.events, "already_handled": count.handled,
        })).collect::<Vec<_>>(),
        "by_type": by_type.iter().map(|(name, count)| json!({
            "type": name, "events": count.events, "already_handled": count.handled,
        })).collect::<Vec<_>>(),
        "events": events,
        "already_handled": handled,
        "partitions": plan.iter().map(|p| json!({
            "topic": p.topic, "partition": p.partition, "low": p.low, "high": p.high,
            "start": p.start, "committed": p.committed, "rewind_to": p.rewind_to(),
        })).collect::<Vec<_>>(),
        "rewound_partitions": rewinds.len(),
        "dry_run": args.dry_run,
    });
    if !context.json {
        print_plan(
            service.name,
            &group,
            &args.since,
            &per_topic,
            &by_type,
            &rewinds,
        );
    }
    if args.dry_run {
        if context.json {
            json_line(&report);
        }
        return Ok(());
    }
    if rewinds.is_empty() {
        if context.json {
            report["caught_up"] = json!(true);
            json_line(&report);
        } else {
            println!(
                "nothing to rewind: group {group} is at or before the start on every partition"
            );
        }
        return Ok(());
    }
    confirm(
        &format!(
            "rewind group {group} on {} partition(s) so {} reprocesses {events} event(s)?",
            rewinds.len(),
            service.name
        ),
        args.yes,
    )?;

    let description = kafka.describe_group(&group).await?;
    if !description.members.is_empty() {
        let members: Vec<String> = description
            .members
            .iter()
            .map(|member| format!("{} at {}", member.client_id, member.host))
            .collect();
        return Err(Exit::Refused(format!(
            "group {group} has {} live member(s) ({}): stop the {} service's consumers first; \
             nothing was changed",
            members.len(),
            members.join(", "),
            service.name
        ))
        .into());
    }
    let offsets: Vec<(String, i32, i64)> = rewinds
        .iter()
        .filter_map(|p| Some((p.full_topic.clone(), p.partition, p.rewind_to()?)))
        .collect();
    kafka.commit(&group, &offsets).await?;
    let check: Vec<(String, i32)> = offsets
        .iter()
        .map(|(topic, partition, _)| (topic.clone(), *partition))
        .collect();
    let now_committed = kafka.committed(&group, &check).await?;
    for (topic, partition, offset) in &offsets {
        let found = now_committed
            .get(&(topic.clone(), *partition))
            .copied()
            .flatten();
        if found != Some(*offset) {
            anyhow::bail!(
                "group {group} on {topic}[{partition}] is at {found:?} after the reset to {offset}; \
                 did a consumer commit in between?"
            );
        }
    }
    if !context.json {
        println!(
            "offsets reset: group {group} rewound on {} partition(s)",
            offsets.len()
        );
    }
    report["rewound"] = json!(true);
    if args.no_wait {
        if context.json {
            json_line(&report);
        } else {
            println!(
                "not waiting (--no-wait): start the {} service to replay",
                service.name
            );
        }
        return Ok(());
    }

    let inbox_before = inbox_size(&pool).await?;
    let started = Instant::now();
    wait_for_catch_up(context, &kafka, &group, service.name, &plan, args.timeout).await?;
    let inbox_after = inbox_size(&pool).await?;
    let newly = inbox_after - inbox_before;
    report["caught_up"] = json!(true);
    report["elapsed_ms"] = json!(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    report["inbox_new"] = json!(newly);
    if context.json {
        json_line(&report);
    } else {
        println!(
            "caught up in {}: {events} event(s) re-read; the inbox grew by {newly} \
             (everything else was skipped as already handled)",
            short(started.elapsed())
        );
    }
    Ok(())
}

type PerTopic = BTreeMap<String, (usize, TypeCount)>;

/// Reads the range with a scratch consumer and counts events per type, and how many of them
/// the service will skip: those its inbox already has, and those it does nothing with.
async fn dry_run(
    context: &Context,
    kafka: &Kafka,
    pool: &PgPool,
    service: &str,
    plan: &[PartitionPlan],
) -> anyhow::Result<(BTreeMap<String, TypeCount>, PerTopic)> {
    let ranges: Vec<Range> = plan
        .iter()
        .map(|p| Range {
            topic: p.full_topic.clone(),
            partition: p.partition,
            start: p.start,
            end: Some(p.high),
        })
        .collect();
    let total: u64 = ranges.iter().map(Range::len).sum();
    let bar = progress(context.json, total, "reading the range");
    let mut receiver = kafka.read(ranges);
    // (topic, event type, event id)
    let mut seen: Vec<(String, String, Option<Uuid>)> = Vec::new();
    while let Some(record) = receiver.recv().await {
        let record = record?;
        bar.inc(1);
        let event_type = record
            .header(events::metadata::headers::EVENT_TYPE)
            .unwrap_or("(no event-type header)")
            .to_owned();
        let event_id = record
            .header(events::metadata::headers::EVENT_ID)
            .and_then(|id| Uuid::parse_str(id).ok());
        seen.push((
            context.logical(&record.topic).to_owned(),
            event_type,
            event_id,
        ));
    }
    bar.finish_and_clear();

    let ids: Vec<Uuid> = seen.iter().filter_map(|(_, _, id)| *id).collect();
    let mut handled: HashSet<Uuid> = HashSet::new();
    for chunk in ids.chunks(5_000) {
        let found: Vec<(Uuid,)> =
            sqlx::query_as("SELECT event_id FROM messaging_inbox WHERE event_id = ANY($1)")
                .bind(chunk)
                .fetch_all(pool)
                .await
                .map_err(|error| anyhow::anyhow!("reading the inbox: {error}"))?;
        handled.extend(found.into_iter().map(|(id,)| id));
    }
    let mut by_type: BTreeMap<String, TypeCount> = BTreeMap::new();
    let mut per_topic: PerTopic = BTreeMap::new();
    for partition in plan {
        per_topic.entry(partition.topic.clone()).or_default().0 += 1;
    }
    for (topic, event_type, id) in seen {
        // An event the service does nothing with is passed over, without an inbox entry.
        let ignored = event_type
            .parse()
            .is_ok_and(|kind| !bazaar_saga::handles(service, kind));
        let was_handled = ignored || id.is_some_and(|id| handled.contains(&id));
        let count = by_type.entry(event_type).or_default();
        count.events += 1;
        count.handled += u64::from(was_handled);
        let count = &mut per_topic.entry(topic).or_default().1;
        count.events += 1;
        count.handled += u64::from(was_handled);
    }
    Ok((by_type, per_topic))
}

fn print_plan(
    service: &str,
    group: &str,
    since: &str,
    per_topic: &PerTopic,
    by_type: &BTreeMap<String, TypeCount>,
    rewinds: &[&PartitionPlan],
) {
    println!("replay of {service} (group {group}) since {since}");
    let mut topics =
        Table::new(["TOPIC", "PARTITIONS", "EVENTS", "ALREADY HANDLED"]).right_aligned(&[1, 2, 3]);
    for (topic, (partitions, count)) in per_topic {
        topics.row(vec![
            topic.clone(),
            partitions.to_string(),
            count.events.to_string(),
            count.handled.to_string(),
        ]);
    }
    topics.print();
    println!();
    let mut types = Table::new(["EVENT TYPE", "EVENTS", "WILL SKIP (inbox)", "WILL APPLY"])
        .right_aligned(&[1, 2, 3]);
    for (name, count) in by_type {
        types.row(vec![
            name.clone(),
            count.events.to_string(),
            count.handled.to_string(),
            (count.events - count.handled).to_string(),
        ]);
    }
    if types.is_empty() {
        println!("no events in the range");
    } else {
        types.print();
    }
    let events: u64 = by_type.values().map(|c| c.events).sum();
    let handled: u64 = by_type.values().map(|c| c.handled).sum();
    println!(
        "\n{events} event(s) in the range; the inbox will skip {handled} as already handled; \
         {} partition(s) to rewind",
        rewinds.len()
    );
}

async fn inbox_size(pool: &PgPool) -> anyhow::Result<i64> {
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM messaging_inbox")
        .fetch_one(pool)
        .await?;
    Ok(count)
}

/// Follows the group's committed offsets until every partition reached the end offsets
/// taken before the reset.
async fn wait_for_catch_up(
    context: &Context,
    kafka: &Kafka,
    group: &str,
    service: &str,
    plan: &[PartitionPlan],
    timeout: Duration,
) -> anyhow::Result<()> {
    let partitions: Vec<(String, i32)> = plan
        .iter()
        .map(|p| (p.full_topic.clone(), p.partition))
        .collect();
    let total: i64 = plan.iter().map(|p| p.remaining(None)).sum();
    let bar = progress(
        context.json,
        u64::try_from(total).unwrap_or(0),
        &format!("waiting for {service}"),
    );
    let started = Instant::now();
    let mut last_members_check: Option<Instant> = None;
    loop {
        let committed = kafka.committed(group, &partitions).await?;
        let remaining: i64 = plan
            .iter()
            .map(|p| {
                p.remaining(
                    committed
                        .get(&(p.full_topic.clone(), p.partition))
                        .copied()
                        .flatten(),
                )
            })
            .sum();
        bar.set_position(u64::try_from(total - remaining).unwrap_or(0));
        if remaining == 0 {
            bar.finish_and_clear();
            return Ok(());
        }
        if started.elapsed() > timeout {
            bar.abandon();
            return Err(Exit::TimedOut(format!(
                "{service} has not caught up after {} ({remaining} message(s) to go); \
                 is it running? The offsets stay reset; check with `bazaar topics`",
                short(timeout)
            ))
            .into());
        }
        if last_members_check.is_none_or(|at| at.elapsed() > Duration::from_secs(3)) {
            last_members_check = Some(Instant::now());
            let members = kafka.describe_group(group).await?.members.len();
            bar.set_message(if members == 0 {
                format!("waiting for {service} to start")
            } else {
                format!("{service} catching up")
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
