//! Kafka from the operator's side: topic shapes, watermarks, offsets by time, a group's
//! committed offsets and members, and reading exact offset ranges.
//!
//! librdkafka's metadata, offset and commit calls block their caller, so every one of them
//! runs on a blocking thread, never on a tokio worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use platform::config::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;

pub use messaging::record::Record;

use crate::exit::Exit;

const TIMEOUT: Duration = Duration::from_secs(10);
/// A bounded read that sees no message for this long is reported instead of hanging.
const STALL: Duration = Duration::from_secs(30);

/// (full topic name, partition)
pub type TopicPartition = (String, i32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

#[derive(Debug, Clone)]
pub struct GroupMember {
    pub client_id: String,
    pub host: String,
}

#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub state: String,
    pub members: Vec<GroupMember>,
}

/// A client for questions about topics and groups (it never joins a group).
#[derive(Clone)]
pub struct Kafka {
    settings: KafkaSettings,
    /// Taken only by `Drop`.
    client: Option<Arc<BaseConsumer>>,
}

impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kafka")
            .field("bootstrap_servers", &self.settings.bootstrap_servers)
            .finish_non_exhaustive()
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        // Closing a librdkafka handle blocks; keep it off the tokio workers.
        let Some(client) = self.client.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(client))),
            Err(_) => drop(client),
        }
    }
}

fn unavailable(settings: &KafkaSettings, error: impl std::fmt::Display) -> anyhow::Error {
    Exit::Unavailable(format!(
        "kafka at {} did not answer: {error}",
        settings.bootstrap_servers
    ))
    .into()
}

/// Settings of a client that acts for `group` without joining it: offsets are read and
/// committed explicitly, never automatically.
fn group_config(settings: &KafkaSettings, group: &str) -> ClientConfig {
    let mut config = messaging::client::base_config(settings);
    config
        .set("client.id", "bazaar-cli")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Consumers never create topics: a typo must not leave a new topic behind.
        .set("allow.auto.create.topics", "false");
    config
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .context("a blocking kafka call panicked")?
}

impl Kafka {
    /// Connects and checks that a broker answers.
    pub async fn connect(settings: &KafkaSettings) -> anyhow::Result<Self> {
        let config = group_config(settings, "bazaar-cli");
        let for_error = settings.clone();
        let client = blocking(move || {
            let client: BaseConsumer = config.create()?;
            client
                .fetch_metadata(Some("__bazaar_cli_ping"), TIMEOUT)
                .map_err(|error| unavailable(&for_error, error))?;
            Ok(client)
        })
        .await?;
        Ok(Self {
            settings: settings.clone(),
            client: Some(Arc::new(client)),
        })
    }

    fn client(&self) -> Arc<BaseConsumer> {
        self.client
            .clone()
            .unwrap_or_else(|| unreachable!("the client is taken only on drop"))
    }

    /// Partition count of a topic (full name), `None` if it does not exist.
    pub async fn partition_count(&self, topic: &str) -> anyhow::Result<Option<i32>> {
        let client = self.client();
        let topic = topic.to_owned();
        let settings = self.settings.clone();
        blocking(move || {
            let metadata = client
                .fetch_metadata(Some(&topic), TIMEOUT)
                .map_err(|error| unavailable(&settings, error))?;
            let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
                return Ok(None);
            };
            if found.error().is_some() || found.partitions().is_empty() {
                return Ok(None);
            }
            Ok(Some(
                i32::try_from(found.partitions().len()).unwrap_or(i32::MAX),
            ))
        })
        .await
    }

    /// Partition count of a topic that must exist.
    pub async fn require_partitions(&self, topic: &str) -> anyhow::Result<i32> {
        self.partition_count(topic).await?.ok_or_else(|| {
            Exit::NotFound(format!(
                "topic {topic} does not exist (wrong --topic-prefix? run `bazaar topics apply`)"
            ))
            .into()
        })
    }

    /// Low and high watermark of every partition of a topic.
    pub async fn watermarks(
        &self,
        topic: &str,
        partitions: i32,
    ) -> anyhow::Result<Vec<Watermarks>> {
        let client = self.client();
        let topic = topic.to_owned();
        let settings = self.settings.clone();
        blocking(move || {
            (0..partitions)
                .map(|partition| {
                    let (low, high) = client
                        .fetch_watermarks(&topic, partition, TIMEOUT)
                        .map_err(|error| unavailable(&settings, error))?;
                    Ok(Watermarks {
                        partition,
                        low,
                        high,
                    })
                })
                .collect()
        })
        .await
    }

    /// The first offset at or after `timestamp_ms` in each partition; `None` where every
    /// message is older (reading would start at the end).
    pub async fn offsets_for_time(
        &self,
        topic: &str,
        partitions: i32,
        timestamp_ms: i64,
    ) -> anyhow::Result<Vec<Option<i64>>> {
        let client = self.client();
        let topic = topic.to_owned();
        let settings = self.settings.clone();
        blocking(move || {
            let mut query = TopicPartitionList::new();
            for partition in 0..partitions {
                query.add_partition_offset(&topic, partition, Offset::Offset(timestamp_ms))?;
            }
            let found = client
                .offsets_for_times(query, TIMEOUT)
                .map_err(|error| unavailable(&settings, error))?;
            let mut offsets = vec![None; usize::try_from(partitions).unwrap_or(0)];
            for element in found.elements() {
                if let (Ok(index), Offset::Offset(offset)) =
                    (usize::try_from(element.partition()), element.offset())
                    && let Some(slot) = offsets.get_mut(index)
                {
                    *slot = Some(offset);
                }
            }
            Ok(offsets)
        })
        .await
    }

    /// A group's committed offsets; `None` for a partition it never committed.
    pub async fn committed(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> anyhow::Result<HashMap<TopicPartition, Option<i64>>> {
        if partitions.is_empty() {
            return Ok(HashMap::new());
        }
        let config = group_config(&self.settings, group);
        let partitions = partitions.to_vec();
        let settings = self.settings.clone();
        blocking(move || {
            let consumer: BaseConsumer = config.create()?;
            let mut query = TopicPartitionList::new();
            for (topic, partition) in &partitions {
                query.add_partition(topic, *partition);
            }
            let committed = consumer
                .committed_offsets(query, TIMEOUT)
                .map_err(|error| unavailable(&settings, error))?;
            Ok(committed
                .elements()
                .iter()
                .map(|element| {
                    let offset = match element.offset() {
                        Offset::Offset(offset) => Some(offset),
                        _ => None,
                    };
                    ((element.topic().to_owned(), element.partition()), offset)
                })
                .collect())
        })
        .await
    }

    /// Commits offsets for `group` without joining it. The broker refuses this while the group
    /// has members, so it cannot race a consumer that started after our check.
    pub async fn commit(&self, group: &str, offsets: &[(String, i32, i64)]) -> anyhow::Result<()> {
        let config = group_config(&self.settings, group);
        let offsets = offsets.to_vec();
        let group = group.to_owned();
        blocking(move || {
            let consumer: BaseConsumer = config.create()?;
            let mut list = TopicPartitionList::new();
            for (topic, partition, offset) in &offsets {
                list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
            }
            consumer
                .commit(&list, CommitMode::Sync)
                .map_err(|error| match error {
                    KafkaError::ConsumerCommit(
                        RDKafkaErrorCode::UnknownMemberId
                        | RDKafkaErrorCode::IllegalGeneration
                        | RDKafkaErrorCode::RebalanceInProgress,
                    ) => anyhow::Error::new(Exit::Refused(format!(
                        "group {group} gained members while its offsets were being reset \
                         ({error}); nothing was changed, stop its consumers and try again"
                    ))),
                    other => anyhow::Error::new(other)
                        .context(format!("committing offsets for group {group}")),
                })
        })
        .await
    }

    /// State and live members of a consumer group.
    pub async fn describe_group(&self, group: &str) -> anyhow::Result<GroupDescription> {
        let client = self.client();
        let name = group.to_owned();
        let settings = self.settings.clone();
        blocking(move || {
            let list = match client.fetch_group_list(Some(&name), TIMEOUT) {
                Ok(list) => list,
                Err(KafkaError::GroupListFetch(RDKafkaErrorCode::GroupIdNotFound)) => {
                    return Ok(GroupDescription {
                        state: "Dead".into(),
                        members: Vec::new(),
                    });
                }
                Err(error) => return Err(unavailable(&settings, error)),
            };
            Ok(list
                .groups()
                .iter()
                .find(|group| group.name() == name)
                .map(describe)
                .unwrap_or(GroupDescription {
                    state: "Dead".into(),
                    members: Vec::new(),
                }))
        })
        .await
    }

    /// Starts reading `ranges` on a blocking thread. Bounded ranges end at their `end`
    /// (exclusive); the channel closes when all of them are done. An unbounded range follows
    /// the partition until the receiver is dropped.
    pub fn read(&self, ranges: Vec<Range>) -> mpsc::Receiver<anyhow::Result<Record>> {
        let (sender, receiver) = mpsc::channel(1024);
        // A scratch group that never commits: nothing of it remains on the brokers.
        let mut config = group_config(
            &self.settings,
            &format!("bazaar-cli-scratch-{}", uuid::Uuid::now_v7()),
        );
        config
            .set("enable.partition.eof", "true")
            // A start below the low watermark (retention removed it) reads from the oldest.
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "50");
        tokio::task::spawn_blocking(move || {
            if let Err(error) = read_blocking(&config, &ranges, &sender) {
                let _ = sender.blocking_send(Err(error));
            }
        });
        receiver
    }
}

fn describe(group: &rdkafka::groups::GroupInfo) -> GroupDescription {
    GroupDescription {
        state: group.state().to_owned(),
        members: group
            .members()
            .iter()
            .map(|member| GroupMember {
                client_id: member.client_id().to_owned(),
                host: member.client_host().to_owned(),
            })
            .collect(),
    }
}

/// Offsets `start..end` of one partition; `end: None` follows it.
#[derive(Debug, Clone)]
pub struct Range {
    pub topic: String,
    pub partition: i32,
    pub start: i64,
    pub end: Option<i64>,
}

impl Range {
    pub fn is_empty(&self) -> bool {
        self.end.is_some_and(|end| self.start >= end)
    }

    pub fn len(&self) -> u64 {
        self.end
            .map_or(0, |end| u64::try_from(end - self.start).unwrap_or(0))
    }
}

fn read_blocking(
    config: &ClientConfig,
    ranges: &[Range],
    sender: &mpsc::Sender<anyhow::Result<Record>>,
) -> anyhow::Result<()> {
    let wanted: Vec<&Range> = ranges.iter().filter(|range| !range.is_empty()).collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let consumer: BaseConsumer = config.create()?;
    let ends: HashMap<TopicPartition, Option<i64>> = wanted
        .iter()
        .map(|range| ((range.topic.clone(), range.partition), range.end))
        .collect();
    let mut pending: HashMap<TopicPartition, i64> = wanted
        .iter()
        .filter_map(|range| Some(((range.topic.clone(), range.partition), range.end?)))
        .collect();
    let follow = wanted.iter().any(|range| range.end.is_none());
    let mut assignment = TopicPartitionList::new();
    for range in &wanted {
        assignment.add_partition_offset(
            &range.topic,
            range.partition,
            Offset::Offset(range.start),
        )?;
    }
    consumer.assign(&assignment)?;

    let mut last_message = Instant::now();
    loop {
        if !follow && pending.is_empty() {
            return Ok(());
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                last_message = Instant::now();
                let key = (message.topic().to_owned(), message.partition());
                let end = ends.get(&key).copied().flatten();
                if end.is_some_and(|end| message.offset() >= end) {
                    pending.remove(&key);
                    continue;
                }
                if end.is_some_and(|end| message.offset() + 1 >= end) {
                    pending.remove(&key);
                }
                if sender
                    .blocking_send(Ok(Record::from_kafka(&message)))
                    .is_err()
                {
                    return Ok(());
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {
                // Compaction leaves gaps, so "done" is the fetch position passing the end, not
                // the last offset seen.
                for element in consumer.position()?.elements() {
                    let key = (element.topic().to_owned(), element.partition());
                    if let (Offset::Offset(position), Some(end)) =
                        (element.offset(), pending.get(&key))
                        && position >= *end
                    {
                        pending.remove(&key);
                    }
                }
                if sender.is_closed() {
                    return Ok(());
                }
                if !follow && !pending.is_empty() && last_message.elapsed() > STALL {
                    anyhow::bail!(
                        "no message for {}s while {} partition(s) still had messages to read",
                        STALL.as_secs(),
                        pending.len()
                    );
                }
            }
            Some(Err(error)) => return Err(error.into()),
        }
    }
}
