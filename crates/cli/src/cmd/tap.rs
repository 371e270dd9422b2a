//! `bazaar tap`: events of one or more topics as JSON lines, decoded through the registry.

use std::io::{IsTerminal, Write};

use chrono::Utc;
use clap::Args;

use crate::context::Context;
use crate::decode::{Decoder, to_json};
use crate::kafka::{Kafka, Range};
use crate::partitioner::partition_for;
use crate::time::Since;

#[derive(Debug, Args)]
pub struct TapArgs {
    /// Topics without the deployment prefix (e.g. order-events, payment-events.dlq), or `all`
    /// for every event topic.
    #[arg(required = true, value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// Start at the oldest message of each partition.
    #[arg(long, conflicts_with = "since")]
    pub from_beginning: bool,
    /// Start at the first message produced at or after a time (2026-11-26T10:00:00Z) or a
    /// duration back from now (15m, 2h).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only messages with this key (an order id, a product id, a SKU). Reads only the partition
    /// the key hashes to.
    #[arg(long)]
    pub key: Option<String>,
    /// Only these event types (repeatable, or comma-separated), e.g. OrderCreated.
    #[arg(long = "type", value_name = "TYPE", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Keep waiting for new messages after the end. Implied when no start is given.
    #[arg(long)]
    pub follow: bool,
    /// Stop after printing this many events.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// With --key, read every partition anyway (for messages produced by a client with another
    /// partitioner).
    #[arg(long)]
    pub all_partitions: bool,
    /// Indent each JSON object over several lines.
    #[arg(long)]
    pub pretty: bool,
}

pub async fn run(context: &Context, args: TapArgs) -> anyhow::Result<()> {
    let catalog = messaging::TopicCatalog::bundled()?;
    let known: Vec<String> = catalog.all_topics().into_iter().map(|t| t.name).collect();
    let mut topics: Vec<String> = Vec::new();
    for topic in &args.topics {
        let named: Vec<String> = if topic == "all" {
            events::codec::event_topics()
                .into_iter()
                .map(str::to_owned)
                .collect()
        } else if known.contains(topic) {
            vec![topic.clone()]
        } else {
            anyhow::bail!(
                "unknown topic {topic:?} (give it without the prefix); known: {}",
                known.join(", ")
            );
        };
        for name in named {
            if !topics.contains(&name) {
                topics.push(name);
            }
        }
    }
    let type_names: Vec<&str> = events::SCHEMAS.iter().map(|(_, name, _)| *name).collect();
    for wanted in &args.types {
        if !type_names.contains(&wanted.as_str()) {
            anyhow::bail!(
                "unknown event type {wanted:?}; known: {}",
                type_names.join(", ")
            );
        }
    }
    let since = args
        .since
        .as_deref()
        .map(|text| Since::parse(text, false, Utc::now()))
        .transpose()
        .map_err(|message| anyhow::anyhow!("--since: {message}"))?;
    let start_at_end = !args.from_beginning && since.is_none();
    let follow = args.follow || start_at_end;
    if start_at_end && std::io::stderr().is_terminal() {
        eprintln!("tap: following new messages (use --from-beginning or --since for history)");
    }

    let kafka = Kafka::connect(&context.kafka).await?;
    let mut ranges = Vec::new();
    for topic in &topics {
        let full = context.topic(topic);
        let count = kafka.require_partitions(&full).await?;
        let marks = kafka.watermarks(&full, count).await?;
        let by_time = match since {
            Some(Since::Time(time)) => Some(
                kafka
                    .offsets_for_time(&full, count, time.timestamp_millis())
                    .await?,
            ),
            _ => None,
        };
        let only = match &args.key {
            Some(key) if !args.all_partitions => Some(partition_for(key, count)),
            _ => None,
        };
        for mark in marks {
            if only.is_some_and(|partition| partition != mark.partition) {
                continue;
            }
            let start = if start_at_end {
                mark.high
            } else if let Some(offsets) = &by_time {
                offsets
                    .get(usize::try_from(mark.partition).unwrap_or(usize::MAX))
                    .copied()
                    .flatten()
                    .unwrap_or(mark.high)
            } else {
                mark.low
            };
            ranges.push(Range {
                topic: full.clone(),
                partition: mark.partition,
                start: start.max(mark.low),
                end: (!follow).then_some(mark.high),
            });
        }
    }

    let decoder = Decoder::new(context);
    let mut receiver = kafka.read(ranges);
    let mut printed = 0_u64;
    let stdout = std::io::stdout();
    while let Some(record) = receiver.recv().await {
        let record = record?;
        if args
            .key
            .as_ref()
            .is_some_and(|key| record.key.as_ref() != Some(key))
        {
            continue;
        }
        let decoded = decoder.decode(record).await?;
        if !args.types.is_empty()
            && !decoded
                .event_type()
                .is_some_and(|t| args.types.iter().any(|wanted| wanted == t))
        {
            continue;
        }
        let line = to_json(&decoded, context.logical(&decoded.record.topic));
        let text = if args.pretty {
            serde_json::to_string_pretty(&line)?
        } else {
            serde_json::to_string(&line)?
        };
        let mut out = stdout.lock();
        // A closed pipe (`| head`) is the reader saying it has enough.
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            break;
        }
        printed += 1;
        if args.limit.is_some_and(|limit| printed >= limit) {
            break;
        }
    }
    Ok(())
}
