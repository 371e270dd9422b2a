//! `bazaar dlq`: parked keys and dead-lettered messages, kept in each consuming service's
//! database (`messaging_parked_keys`, `messaging_parked_messages`; copies in `<topic>.dlq`),
//! and their redrive through the running service's consumer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::context::{Context, redact};
use crate::decode::{Decoder, event_body, rfc3339};
use crate::exit::Exit;
use crate::kafka::{Kafka, Record};
use crate::output::{Table, json_line, progress};
use crate::services::SERVICES;
use crate::time::{parse_duration, short_signed};

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Parked keys of every consuming service, with their error, parked messages and age.
    List {
        /// Only this topic (without the prefix), e.g. order-events.
        topic: Option<String>,
        /// Only these services (repeatable); default: every consuming service.
        #[arg(long = "service", value_name = "SERVICE")]
        services: Vec<String>,
    },
    /// One parked message: origin, error, headers and the decoded event.
    Show {
        /// The id `dlq list` prints, `<service>:<n>` (or `<n>` with --service, or alone if
        /// only one service has it).
        id: String,
        /// The service whose database holds the message.
        #[arg(long)]
        service: Option<String>,
    },
    /// Ask the consuming services to replay the parked messages of a topic (or of one key) in
    /// order, and wait until the keys are released.
    Redrive {
        /// The topic (without the prefix), e.g. order-events.
        topic: String,
        /// Only this key (an order id).
        #[arg(long)]
        key: Option<String>,
        /// Only these services (repeatable); default: every service with parked keys there.
        #[arg(long = "service", value_name = "SERVICE")]
        services: Vec<String>,
        /// Return once the redrive is requested.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this long (the request stays in place).
        #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
        timeout: Duration,
    },
}

pub async fn run(context: &Context, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { topic, services } => list(context, topic.as_deref(), &services).await,
        DlqCommand::Show { id, service } => show(context, &id, service.as_deref()).await,
        DlqCommand::Redrive {
            topic,
            key,
            services,
            no_wait,
            timeout,
        } => redrive(context, &topic, key.as_deref(), &services, no_wait, timeout).await,
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct ParkedMessage {
    id: i64,
    topic: String,
    message_key: String,
    partition: i32,
    offset: i64,
    error: String,
    attempts: i32,
    parked_at: DateTime<Utc>,
    headers: sqlx::types::Json<Vec<(String, String)>>,
}

impl ParkedMessage {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct ParkedKey {
    topic: String,
    message_key: String,
    error: String,
    parked_at: DateTime<Utc>,
    redrive_requested_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
}

/// The services to look at, each with a pool, or why it could not be reached.
async fn connect_all(
    context: &Context,
    wanted: &[String],
) -> anyhow::Result<Vec<(&'static str, Result<PgPool, String>)>> {
    let mut selected = Vec::new();
    for name in wanted {
        selected.push(context.service(name)?.name);
    }
    if selected.is_empty() {
        selected = SERVICES.iter().map(|service| service.name).collect();
    }
    let mut pools = Vec::new();
    for name in selected {
        let pool = context
            .connect(name, None)
            .await
            .map_err(|error| format!("{error:#}"));
        pools.push((name, pool));
    }
    if pools.iter().all(|(_, pool)| pool.is_err()) {
        let reasons: Vec<String> = pools
            .iter()
            .filter_map(|(_, pool)| pool.as_ref().err().cloned())
            .collect();
        return Err(Exit::Unavailable(reasons.join("; ")).into());
    }
    Ok(pools)
}

async fn parked(
    pool: &PgPool,
    topic: Option<&str>,
) -> Result<(Vec<ParkedKey>, Vec<ParkedMessage>), sqlx::Error> {
    let keys: Vec<ParkedKey> = sqlx::query_as(
        "SELECT topic, message_key, error, parked_at, redrive_requested_at, now() AS now
           FROM messaging_parked_keys WHERE $1::text IS NULL OR topic = $1 ORDER BY parked_at",
    )
    .bind(topic)
    .fetch_all(pool)
    .await?;
    let messages: Vec<ParkedMessage> = sqlx::query_as(
        "SELECT id, topic, message_key, partition, \"offset\", error, attempts, parked_at, headers
           FROM messaging_parked_messages WHERE $1::text IS NULL OR topic = $1 ORDER BY id",
    )
    .bind(topic)
    .fetch_all(pool)
    .await?;
    Ok((keys, messages))
}

async fn list(context: &Context, topic: Option<&str>, services: &[String]) -> anyhow::Result<()> {
    let full_topic = topic.map(|t| context.topic(t));
    let pools = connect_all(context, services).await?;
    let mut report = Vec::new();
    let mut table = Table::new([
        "SERVICE", "TOPIC", "KEY", "PARKED", "MESSAGES", "IDS", "REDRIVE", "ERROR",
    ])
    .right_aligned(&[4]);
    let mut problems = Vec::new();
    let mut dlq_topics: BTreeMap<String, ()> = BTreeMap::new();
    for (service, pool) in &pools {
        let pool = match pool {
            Ok(pool) => pool,
            Err(error) => {
                problems.push(format!("{service}: {error}"));
                report.push(json!({"service": service, "error": error}));
                continue;
            }
        };
        let (keys, messages) = match parked(pool, full_topic.as_deref()).await {
            Ok(found) => found,
            Err(error) => {
                let error = format!("reading parked messages: {error}");
                problems.push(format!("{service}: {error}"));
                report.push(json!({"service": service, "error": error}));
                continue;
            }
        };
        let mut key_reports = Vec::new();
        for key in &keys {
            let ids: Vec<i64> = messages
                .iter()
                .filter(|m| m.topic == key.topic && m.message_key == key.message_key)
                .map(|m| m.id)
                .collect();
            let logical = context.logical(&key.topic).to_owned();
            dlq_topics.insert(logical.clone(), ());
            let age = key.now - key.parked_at;
            table.row(vec![
                (*service).to_owned(),
                logical.clone(),
                key.message_key.clone(),
                format!("{} ago", short_signed(age)),
                ids.len().to_string(),
                id_list(service, &ids),
                key.redrive_requested_at.map_or_else(
                    || "-".to_owned(),
                    |at| format!("requested {}", short_signed(key.now - at)),
                ),
                one_line(&key.error),
            ]);
            key_reports.push(json!({
                "topic": logical,
                "key": key.message_key,
                "error": key.error,
                "parked_at": rfc3339(key.parked_at),
                "age_secs": age.num_seconds(),
                "redrive_requested_at": key.redrive_requested_at.map(rfc3339),
                "messages": ids.iter().map(|id| format!("{service}:{id}")).collect::<Vec<_>>(),
            }));
        }
        // Dead letters without a parked key: keyless messages (nothing to hold back).
        let loose: Vec<&ParkedMessage> = messages
            .iter()
            .filter(|m| {
                !keys
                    .iter()
                    .any(|k| k.topic == m.topic && k.message_key == m.message_key)
            })
            .collect();
        for message in &loose {
            let logical = context.logical(&message.topic).to_owned();
            dlq_topics.insert(logical.clone(), ());
            table.row(vec![
                (*service).to_owned(),
                logical,
                if message.message_key.is_empty() {
                    "(no key)".into()
                } else {
                    message.message_key.clone()
                },
                rfc3339(message.parked_at),
                "1".into(),
                format!("{service}:{}", message.id),
                "not parked".into(),
                one_line(&message.error),
            ]);
        }
        report.push(json!({
            "service": service,
            "database": redact(&context.database_url(service, None)),
            "keys": key_reports,
            "unparked_messages": loose.iter().map(|m| json!({
                "id": format!("{service}:{}", m.id),
                "topic": context.logical(&m.topic),
                "key": m.message_key,
                "error": m.error,
                "type": m.header(events::metadata::headers::EVENT_TYPE),
            })).collect::<Vec<_>>(),
        }));
    }
    if let Some(topic) = topic {
        dlq_topics.insert(topic.to_owned(), ());
    }
    // The copies in `<topic>.dlq`, for people and tools that read topics rather than tables.
    let mut copies = Vec::new();
    if let Ok(kafka) = Kafka::connect(&context.kafka).await {
        for topic in dlq_topics.keys() {
            let full = context.topic(&format!("{topic}.dlq"));
            if let Some(count) = kafka.partition_count(&full).await? {
                let messages: i64 = kafka
                    .watermarks(&full, count)
                    .await?
                    .iter()
                    .map(|m| m.high - m.low)
                    .sum();
                copies.push((format!("{topic}.dlq"), messages));
            }
        }
    }
    if context.json {
        json_line(&json!({
            "services": report,
            "dlq_topics": copies.iter().map(|(topic, messages)| json!({"topic": topic, "messages": messages})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    if table.is_empty() {
        println!(
            "no parked keys{}",
            topic.map_or_else(String::new, |t| format!(" on {t}"))
        );
    } else {
        table.print();
    }
    for (topic, messages) in &copies {
        println!("{topic}: {messages} dead-lettered message(s) in Kafka");
    }
    for problem in &problems {
        eprintln!("warning: {problem}");
    }
    Ok(())
}

fn id_list(service: &str, ids: &[i64]) -> String {
    let shown: Vec<String> = ids.iter().take(5).map(ToString::to_string).collect();
    let more = if ids.len() > 5 {
        format!(",+{}", ids.len() - 5)
    } else {
        String::new()
    };
    format!("{service}:{}{more}", shown.join(","))
}

fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > 100 {
        format!("{}…", line.chars().take(99).collect::<String>())
    } else {
        line.to_owned()
    }
}

async fn show(context: &Context, id: &str, service: Option<&str>) -> anyhow::Result<()> {
    let (service, number) = match id.split_once(':') {
        Some((service, number)) => (Some(service.to_owned()), number),
        None => (service.map(str::to_owned), id),
    };
    let number: i64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("{id:?} is not a parked message id (e.g. order:12)"))?;
    let wanted: Vec<String> = service.into_iter().collect();
    let pools = connect_all(context, &wanted).await?;
    let mut found = Vec::new();
    for (name, pool) in &pools {
        let Ok(pool) = pool else { continue };
        let row: Option<(ParkedMessage, Option<Vec<u8>>)> = match sqlx::query_as::<_, ParkedMessage>(
            "SELECT id, topic, message_key, partition, \"offset\", error, attempts, parked_at, headers
               FROM messaging_parked_messages WHERE id = $1",
        )
        .bind(number)
        .fetch_optional(pool)
        .await
        {
            Ok(Some(message)) => {
                let (payload,): (Option<Vec<u8>>,) = sqlx::query_as(
                    "SELECT payload FROM messaging_parked_messages WHERE id = $1",
                )
                .bind(number)
                .fetch_one(pool)
                .await?;
                Some((message, payload))
            }
            Ok(None) | Err(_) => None,
        };
        if let Some(row) = row {
            found.push((*name, pool.clone(), row));
        }
    }
    let (service, pool, (message, payload)) = match found.len() {
        0 => {
            return Err(Exit::NotFound(format!("no parked message {id}")).into());
        }
        1 => found.remove(0),
        _ => anyhow::bail!(
            "{} services have a parked message {number}: {}; say which, e.g. {}:{number}",
            found.len(),
            found
                .iter()
                .map(|(s, ..)| *s)
                .collect::<Vec<_>>()
                .join(", "),
            found[0].0
        ),
    };
    let key_state: Option<ParkedKey> = sqlx::query_as(
        "SELECT topic, message_key, error, parked_at, redrive_requested_at, now() AS now
           FROM messaging_parked_keys WHERE topic = $1 AND message_key = $2",
    )
    .bind(&message.topic)
    .bind(&message.message_key)
    .fetch_optional(&pool)
    .await?;
    let record = Record {
        topic: message.topic.clone(),
        partition: message.partition,
        offset: message.offset,
        timestamp_ms: None,
        key: Some(message.message_key.clone()),
        payload,
        headers: message.headers.0.clone(),
    };
    let decoded = Decoder::new(context).decode(record).await?;
    let logical = context.logical(&message.topic).to_owned();
    let headers: serde_json::Map<String, Value> = message
        .headers
        .0
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    if context.json {
        json_line(&json!({
            "id": format!("{service}:{}", message.id),
            "service": service,
            "topic": logical,
            "partition": message.partition,
            "offset": message.offset,
            "key": message.message_key,
            "error": message.error,
            "attempts": message.attempts,
            "parked_at": rfc3339(message.parked_at),
            "key_parked": key_state.is_some(),
            "redrive_requested_at": key_state.as_ref().and_then(|k| k.redrive_requested_at).map(rfc3339),
            "type": decoded.event_type(),
            "headers": headers,
            "event": decoded.event.as_ref().ok().map(event_body),
            "decode_error": decoded.event.as_ref().err(),
        }));
        return Ok(());
    }
    println!("parked message {service}:{}", message.id);
    println!(
        "  origin     {logical} partition {} offset {}",
        message.partition, message.offset
    );
    println!("  key        {}", message.message_key);
    println!(
        "  parked     {} after {} attempt(s)",
        rfc3339(message.parked_at),
        message.attempts
    );
    println!("  error      {}", message.error);
    match &key_state {
        Some(key) => println!(
            "  status     key parked since {} ({}){}",
            rfc3339(key.parked_at),
            one_line(&key.error),
            key.redrive_requested_at
                .map_or_else(String::new, |at| format!(
                    "; redrive requested {}",
                    rfc3339(at)
                ))
        ),
        None => println!("  status     key not parked (released, or a keyless dead letter)"),
    }
    println!("headers");
    let width = message
        .headers
        .0
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0);
    for (name, value) in &message.headers.0 {
        println!("  {name:<width$}  {value}");
    }
    match &decoded.event {
        Ok(event) => {
            println!("event {}", event.type_name());
            println!("{}", serde_json::to_string_pretty(&event_body(event))?);
        }
        Err(error) => println!("event cannot be decoded: {error}"),
    }
    Ok(())
}

/// Keys whose redrive was requested on one service.
struct Requested {
    service: &'static str,
    pool: PgPool,
    keys: Vec<String>,
}

async fn redrive(
    context: &Context,
    topic: &str,
    key: Option<&str>,
    services: &[String],
    no_wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let full_topic = context.topic(topic);
    let pools = connect_all(context, services).await?;
    let mut requested = Vec::new();
    let mut total_messages: i64 = 0;
    for (service, pool) in pools {
        let Ok(pool) = pool else { continue };
        let keys: Vec<(String, i64)> = match sqlx::query_as(
            "SELECT k.message_key, (SELECT count(*) FROM messaging_parked_messages m
                                     WHERE m.topic = k.topic AND m.message_key = k.message_key)
               FROM messaging_parked_keys k
              WHERE k.topic = $1 AND ($2::text IS NULL OR k.message_key = $2)
              ORDER BY k.parked_at",
        )
        .bind(&full_topic)
        .bind(key)
        .fetch_all(&pool)
        .await
        {
            Ok(keys) => keys,
            Err(error) => {
                eprintln!("warning: {service}: reading parked keys: {error}");
                continue;
            }
        };
        if keys.is_empty() {
            continue;
        }
        let marked = messaging::dead_letter::request_redrive(&pool, &full_topic, key).await?;
        total_messages += keys.iter().map(|(_, count)| count).sum::<i64>();
        if !context.json {
            println!(
                "redrive requested: {service} will replay {} key(s) of {topic} in order ({} message(s))",
                marked,
                keys.iter().map(|(_, count)| count).sum::<i64>()
            );
        }
        requested.push(Requested {
            service,
            pool,
            keys: keys.into_iter().map(|(key, _)| key).collect(),
        });
    }
    if requested.is_empty() {
        return Err(Exit::NotFound(format!(
            "nothing parked on {topic}{}",
            key.map_or_else(String::new, |k| format!(" for key {k}"))
        ))
        .into());
    }
    if no_wait {
        if context.json {
            json_line(&json!({
                "topic": topic,
                "requested": requested.iter().map(|r| json!({"service": r.service, "keys": r.keys})).collect::<Vec<_>>(),
                "waited": false,
            }));
        }
        return Ok(());
    }

    let started = Instant::now();
    let bar = progress(
        context.json,
        u64::try_from(total_messages).unwrap_or(0),
        "redriving",
    );
    let mut released: Vec<(&'static str, String)> = Vec::new();
    let mut failed: Vec<(&'static str, String, String)> = Vec::new();
    loop {
        let mut remaining_messages: i64 = 0;
        for request in &mut requested {
            let rows: Vec<(String, Option<DateTime<Utc>>, String, i64)> = sqlx::query_as(
                "SELECT k.message_key, k.redrive_requested_at, k.error,
                        (SELECT count(*) FROM messaging_parked_messages m
                          WHERE m.topic = k.topic AND m.message_key = k.message_key)
                   FROM messaging_parked_keys k WHERE k.topic = $1 AND k.message_key = ANY($2)",
            )
            .bind(&full_topic)
            .bind(&request.keys)
            .fetch_all(&request.pool)
            .await?;
            let mut still = Vec::new();
            for key in request.keys.drain(..) {
                match rows.iter().find(|(k, ..)| *k == key) {
                    None => released.push((request.service, key)),
                    // The consumer clears the request when the head message fails again.
                    Some((_, None, error, _)) => failed.push((request.service, key, error.clone())),
                    Some((_, Some(_), _, count)) => {
                        remaining_messages += count;
                        still.push(key);
                    }
                }
            }
            request.keys = still;
        }
        bar.set_position(u64::try_from((total_messages - remaining_messages).max(0)).unwrap_or(0));
        if requested.iter().all(|r| r.keys.is_empty()) {
            break;
        }
        if started.elapsed() > timeout {
            bar.abandon();
            let waiting: Vec<String> = requested
                .iter()
                .filter(|r| !r.keys.is_empty())
                .map(|r| format!("{} ({} key(s))", r.service, r.keys.len()))
                .collect();
            return Err(Exit::TimedOut(format!(
                "not released after {}: {}; is the service running? Its consumer looks for \
                 redrive requests every second, and the requests stay in place",
                crate::time::short(timeout),
                waiting.join(", ")
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    if context.json {
        json_line(&json!({
            "topic": topic,
            "released": released.iter().map(|(s, k)| json!({"service": s, "key": k})).collect::<Vec<_>>(),
            "failed": failed.iter().map(|(s, k, e)| json!({"service": s, "key": k, "error": e})).collect::<Vec<_>>(),
            "messages": total_messages,
            "elapsed_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        }));
    } else {
        for (service, key) in &released {
            println!("released {key} on {service}");
        }
        for (service, key, error) in &failed {
            println!("still parked {key} on {service}: {error}");
        }
        println!(
            "{} key(s) released, {} still failing, in {}",
            released.len(),
            failed.len(),
            crate::time::short(elapsed)
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{} key(s) still fail after the redrive; fix the cause and redrive again",
            failed.len()
        ))
    }
}
