//! `bazaar topics`: every topic of the catalog with partitions, end offsets and the lag of
//! each consumer group that reads it.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use messaging::TopicCatalog;
use serde_json::{Value, json};

use crate::context::Context;
use crate::kafka::{Kafka, Watermarks};
use crate::output::{Table, json_line};
use crate::services::SERVICES;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TopicsArgs {
    #[command(subcommand)]
    pub command: Option<TopicsCommand>,
    /// Show each partition's low and high watermark and each group's committed offset.
    #[arg(long)]
    pub partitions: bool,
    /// Also report this consumer group (on every event topic it has committed offsets for).
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Topic catalog; defaults to the one this binary was built with.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create missing topics and bring partitions and configs up to date. Safe to re-run.
    Apply {
        /// Topic catalog; defaults to the one this binary was built with.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Replication factor for newly created topics (production: 3).
        #[arg(long, env = "BAZAAR__KAFKA__REPLICATION_FACTOR", default_value_t = 1)]
        replication_factor: i32,
    },
    /// Delete the topics tests made (`test-<UUID v7>.<topic>`) longer ago than a duration, or
    /// since a moment, so a long-lived development broker does not pile up partitions: each
    /// costs the broker work at rest (ten thousand kept it at 4.5 % of a core, against 1.1 %).
    PruneTests {
        /// Keep topics younger than this (e.g. `30m`, `2h`): their tests may still run.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Delete instead the test topics made since this moment (Unix milliseconds): what one
        /// test run made, once it has ended (`make test` does this when its tests pass).
        #[arg(long, value_name = "UNIX_MS", conflicts_with = "older_than")]
        since: Option<u64>,
    },
}

pub fn catalog(file: Option<&PathBuf>) -> anyhow::Result<TopicCatalog> {
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(TopicCatalog::parse(&text).with_context(|| format!("in {}", path.display()))?)
        }
        None => Ok(TopicCatalog::bundled()?),
    }
}

pub async fn run(context: &Context, args: TopicsArgs) -> anyhow::Result<()> {
    match args.command {
        Some(TopicsCommand::Apply {
            file,
            replication_factor,
        }) => apply(context, file.as_ref(), replication_factor).await,
        Some(TopicsCommand::PruneTests { older_than, since }) => {
            let made = match since {
                Some(since_ms) => MadeWhen::Since(since_ms),
                None => MadeWhen::Before(older_than),
            };
            prune_tests(context, made).await
        }
        None => list(context, &args).await,
    }
}

async fn apply(
    context: &Context,
    file: Option<&PathBuf>,
    replication_factor: i32,
) -> anyhow::Result<()> {
    let mut settings = context.kafka.clone();
    settings.replication_factor = replication_factor;
    let report = messaging::topics::apply(&catalog(file)?, &settings)
        .await
        .with_context(|| format!("applying topics to {}", settings.bootstrap_servers))?;
    if context.json {
        json_line(&json!({
            "created": report.created,
            "partitions_added": report.partitions_added,
            "configs_updated": report.configs_updated,
            "unchanged": report.unchanged,
        }));
        return Ok(());
    }
    for (label, names) in [
        ("created", &report.created),
        ("partitions added", &report.partitions_added),
        ("config updated", &report.configs_updated),
    ] {
        for name in names {
            println!("{label:>16}  {name}");
        }
    }
    println!(
        "topics: {} created, {} grown, {} reconfigured, {} unchanged",
        report.created.len(),
        report.partitions_added.len(),
        report.configs_updated.len(),
        report.unchanged.len()
    );
    Ok(())
}

/// When the test of a `test-<uuid>` prefix began: the first 48 bits of its UUID v7.
fn prefix_created_ms(prefix: &str) -> Option<u64> {
    u64::from_str_radix(prefix.strip_prefix("test-")?.get(..12)?, 16).ok()
}

/// The `test-<uuid>` that starts the names of one test's topics (`test-<uuid>.<topic>`) and
/// consumer groups (`test-<uuid>-<service>`).
fn test_prefix(name: &str) -> Option<&str> {
    let prefix = name.get(..37)?;
    let uuid = prefix.strip_prefix("test-")?;
    let well_formed = uuid.bytes().all(|b| b.is_ascii_hexdigit())
        && matches!(name.as_bytes().get(37), None | Some(b'.' | b'-'));
    well_formed.then_some(prefix)
}

/// Which test topics to delete, by when their test made them.
#[derive(Debug, Clone, Copy)]
enum MadeWhen {
    /// Longer ago than this.
    Before(std::time::Duration),
    /// At or after this moment (Unix milliseconds).
    Since(u64),
}

impl MadeWhen {
    fn covers(self, made_ms: u64, now_ms: u64) -> bool {
        match self {
            Self::Before(age) => {
                made_ms < now_ms.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
            }
            Self::Since(since_ms) => made_ms >= since_ms,
        }
    }
}

impl std::fmt::Display for MadeWhen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Before(age) => write!(f, "older than {}", humantime::format_duration(*age)),
            Self::Since(since_ms) => write!(f, "made since {since_ms} (Unix ms)"),
        }
    }
}

async fn prune_tests(context: &Context, made: MadeWhen) -> anyhow::Result<()> {
    let settings = context.kafka.clone();
    let config = messaging::client::base_config(&settings);
    let (names, busy) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(Vec<String>, HashSet<String>)> {
            let consumer: rdkafka::consumer::BaseConsumer = config.create()?;
            let timeout = std::time::Duration::from_secs(30);
            let metadata = rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, timeout)?;
            let names = metadata
                .topics()
                .iter()
                .map(|topic| topic.name().to_owned())
                .collect();
            // A test still running (another checkout's, on the same broker) has members in
            // its consumer groups (`test-<uuid>-<service>`): its topics are left alone.
            let groups = rdkafka::consumer::Consumer::fetch_group_list(&consumer, None, timeout)?;
            let busy = groups
                .groups()
                .iter()
                .filter(|group| !group.members().is_empty())
                .filter_map(|group| test_prefix(group.name()).map(str::to_owned))
                .collect();
            Ok((names, busy))
        })
        .await??;
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    let stale: Vec<String> = names
        .into_iter()
        .filter(|name| {
            test_prefix(name).is_some_and(|prefix| {
                !busy.contains(prefix)
                    && prefix_created_ms(prefix).is_some_and(|made_ms| made.covers(made_ms, now_ms))
            })
        })
        .collect();
    let admin = messaging::client::admin_client(&settings)?;
    let options = rdkafka::admin::AdminOptions::new()
        .operation_timeout(Some(std::time::Duration::from_secs(60)));
    let mut deleted = 0;
    for chunk in stale.chunks(200) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for outcome in admin.delete_topics(&refs, &options).await? {
            match outcome {
                Ok(_) => deleted += 1,
                Err((topic, code)) => eprintln!("could not delete {topic}: {code}"),
            }
        }
    }
    if context.json {
        json_line(&json!({ "deleted": deleted, "stale": stale.len() }));
    } else {
        println!("test topics: {deleted} deleted ({} {made})", stale.len());
    }
    Ok(())
}

/// One group's position on one topic.
struct GroupOnTopic {
    group: String,
    service: Option<&'static str>,
    /// Committed offset per partition, `None` where it never committed.
    committed: Vec<Option<i64>>,
}

impl GroupOnTopic {
    /// Messages the group has still to read; a partition without a commit will be read from
    /// its oldest message (saga consumers start at the beginning).
    fn lag(&self, marks: &[Watermarks]) -> i64 {
        marks
            .iter()
            .map(|mark| {
                let from = self
                    .committed
                    .get(usize::try_from(mark.partition).unwrap_or(usize::MAX))
                    .copied()
                    .flatten()
                    .unwrap_or(mark.low);
                (mark.high - from.max(mark.low)).max(0)
            })
            .sum()
    }

    fn has_commits(&self) -> bool {
        self.committed.iter().any(Option::is_some)
    }
}

struct TopicRow {
    name: String,
    full_name: String,
    description: String,
    marks: Option<Vec<Watermarks>>,
    groups: Vec<GroupOnTopic>,
}

async fn list(context: &Context, args: &TopicsArgs) -> anyhow::Result<()> {
    let kafka = Kafka::connect(&context.kafka).await?;
    let catalog = catalog(args.file.as_ref())?;
    let mut rows = Vec::new();
    for spec in catalog.all_topics() {
        let full_name = context.topic(&spec.name);
        let marks = match kafka.partition_count(&full_name).await? {
            Some(count) => Some(kafka.watermarks(&full_name, count).await?),
            None => None,
        };
        rows.push(TopicRow {
            name: spec.name.clone(),
            full_name,
            description: spec.description.clone(),
            marks,
            groups: Vec::new(),
        });
    }

    // Known services on the topics they consume, extra groups on every non-DLQ topic.
    let mut readers: Vec<(String, Option<&'static str>, Vec<String>)> = SERVICES
        .iter()
        .map(|service| {
            (
                context.group_of(service.name),
                Some(service.name),
                service.consumes.iter().map(|t| (*t).to_owned()).collect(),
            )
        })
        .collect();
    for group in &args.groups {
        let topics = rows
            .iter()
            .filter(|row| !row.name.ends_with(".dlq"))
            .map(|row| row.name.clone())
            .collect();
        readers.push((group.clone(), None, topics));
    }
    let mut group_states = Vec::new();
    for (group, service, topics) in &readers {
        let partitions: Vec<(String, i32)> = rows
            .iter()
            .filter(|row| topics.contains(&row.name))
            .flat_map(|row| {
                row.marks
                    .iter()
                    .flatten()
                    .map(|mark| (row.full_name.clone(), mark.partition))
            })
            .collect();
        let committed = kafka.committed(group, &partitions).await?;
        let description = kafka.describe_group(group).await?;
        let mut total_lag = 0;
        for row in rows.iter_mut().filter(|row| topics.contains(&row.name)) {
            let Some(marks) = &row.marks else { continue };
            let position = GroupOnTopic {
                group: group.clone(),
                service: *service,
                committed: marks
                    .iter()
                    .map(|mark| {
                        committed
                            .get(&(row.full_name.clone(), mark.partition))
                            .copied()
                            .flatten()
                    })
                    .collect(),
            };
            // An extra group is shown only where it has read something.
            if service.is_none() && !position.has_commits() {
                continue;
            }
            total_lag += position.lag(marks);
            row.groups.push(position);
        }
        group_states.push((group.clone(), *service, description, total_lag));
    }

    if context.json {
        let topics: Vec<Value> = rows
            .iter()
            .map(|row| {
                let marks = row.marks.as_deref().unwrap_or_default();
                json!({
                    "topic": row.name,
                    "full_name": row.full_name,
                    "exists": row.marks.is_some(),
                    "description": row.description,
                    "partitions": marks.iter().map(|m| json!({"partition": m.partition, "low": m.low, "high": m.high})).collect::<Vec<_>>(),
                    "end_offsets": marks.iter().map(|m| m.high).sum::<i64>(),
                    "messages": marks.iter().map(|m| m.high - m.low).sum::<i64>(),
                    "groups": row.groups.iter().map(|g| json!({
                        "group": g.group,
                        "service": g.service,
                        "committed": g.committed,
                        "lag": g.lag(marks),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let groups: Vec<Value> = group_states
            .iter()
            .map(|(group, service, description, lag)| {
                json!({
                    "group": group,
                    "service": service,
                    "state": description.state,
                    "members": description.members.len(),
                    "lag": lag,
                })
            })
            .collect();
        json_line(&json!({ "topics": topics, "groups": groups }));
        return Ok(());
    }

    let mut table = Table::new([
        "TOPIC",
        "PARTS",
        "END",
        "MESSAGES",
        "GROUP",
        "COMMITTED",
        "LAG",
    ])
    .right_aligned(&[1, 2, 3, 5, 6]);
    for row in &rows {
        let Some(marks) = &row.marks else {
            table.row(vec![
                row.name.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "missing (run `bazaar topics apply`)".into(),
            ]);
            continue;
        };
        let end: i64 = marks.iter().map(|m| m.high).sum();
        let messages: i64 = marks.iter().map(|m| m.high - m.low).sum();
        let mut first = vec![
            row.name.clone(),
            marks.len().to_string(),
            end.to_string(),
            messages.to_string(),
        ];
        if row.groups.is_empty() {
            table.row(std::mem::take(&mut first));
        }
        for (i, group) in row.groups.iter().enumerate() {
            let committed = if group.has_commits() {
                group
                    .committed
                    .iter()
                    .map(|c| c.unwrap_or(0))
                    .sum::<i64>()
                    .to_string()
            } else {
                "none".into()
            };
            let cells = vec![group.group.clone(), committed, group.lag(marks).to_string()];
            if i == 0 {
                first.extend(cells);
                table.row(std::mem::take(&mut first));
            } else {
                let mut line = vec![String::new(); 4];
                line.extend(cells);
                table.row(line);
            }
        }
        // Empty topics would only add rows of zeros.
        if args.partitions && messages > 0 {
            for mark in marks {
                let mut line = vec![
                    format!("  partition {}", mark.partition),
                    String::new(),
                    mark.high.to_string(),
                    (mark.high - mark.low).to_string(),
                ];
                let committed: Vec<String> = row
                    .groups
                    .iter()
                    .map(|group| {
                        let offset = group
                            .committed
                            .get(usize::try_from(mark.partition).unwrap_or(usize::MAX))
                            .copied()
                            .flatten();
                        format!(
                            "{}={}",
                            group.service.unwrap_or(&group.group),
                            offset.map_or_else(|| "-".into(), |o| o.to_string())
                        )
                    })
                    .collect();
                if !committed.is_empty() {
                    line.push(committed.join(" "));
                }
                table.row(line);
            }
        }
    }
    table.print();
    println!();
    let mut groups =
        Table::new(["GROUP", "SERVICE", "STATE", "MEMBERS", "LAG"]).right_aligned(&[3, 4]);
    for (group, service, description, lag) in &group_states {
        groups.row(vec![
            group.clone(),
            service.unwrap_or("-").to_owned(),
            description.state.clone(),
            description.members.len().to_string(),
            lag.to_string(),
        ]);
    }
    groups.print();
    Ok(())
}

#[cfg(test)]
mod prune_tests {
    use std::time::Duration;

    use super::{MadeWhen, prefix_created_ms, test_prefix};

    /// When a test topic was made, as pruning reads it.
    fn test_topic_created_ms(name: &str) -> Option<u64> {
        test_prefix(name).and_then(prefix_created_ms)
    }

    #[test]
    fn a_topic_is_pruned_by_age_or_by_the_run_that_made_it() {
        let now = 10_000_000;
        let hour_old = MadeWhen::Before(Duration::from_secs(3600));
        assert!(
            hour_old.covers(now - 3_600_001, now),
            "made over an hour ago"
        );
        assert!(
            !hour_old.covers(now - 3_599_999, now),
            "its test may still run"
        );
        let this_run = MadeWhen::Since(now - 60_000);
        assert!(this_run.covers(now - 60_000, now), "made as the run began");
        assert!(this_run.covers(now, now));
        assert!(!this_run.covers(now - 60_001, now), "an earlier run's");
    }

    #[test]
    fn only_test_topics_carry_a_creation_time() {
        // 0x01a2164a941b = 1795672512795 ms.
        assert_eq!(
            test_topic_created_ms("test-01a2164a941b7530943a778be3d1a44d.order-events"),
            Some(0x01a2_164a_941b)
        );
        assert_eq!(test_topic_created_ms("order-events"), None);
        assert_eq!(test_topic_created_ms("test-nothex.order-events"), None);
        assert_eq!(
            test_prefix("test-01a2164a941b7530943a778be3d1a44d-stack-order"),
            Some("test-01a2164a941b7530943a778be3d1a44d"),
            "a test's consumer group"
        );
        assert_eq!(
            test_prefix("test-01a2164a941b7530943a778be3d1a44dx.order-events"),
            None
        );
    }
}
