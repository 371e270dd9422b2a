//! Consumer lag of the services' groups, straight from the broker: for every partition of the
//! topics a group has committed offsets on, the high watermark minus the committed offset.
//!
//! The services commit offsets in the background every 500 ms, so a lag of 0 is seen up to
//! about half a second after the last message was handled.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the lag of consumer groups without joining them.
pub struct LagProbe {
    groups: Vec<(String, BaseConsumer)>,
    watermarks: BaseConsumer,
    /// (topic, partition) of every topic followed.
    partitions: Vec<(String, i32)>,
}

impl std::fmt::Debug for LagProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagProbe")
            .field(
                "groups",
                &self.groups.iter().map(|(g, _)| g).collect::<Vec<_>>(),
            )
            .field("partitions", &self.partitions.len())
            .finish()
    }
}

/// Lag is read as the read-only analyst principal (`BAZAAR_KAFKA_PASSWORD`, or the local one;
/// `BAZAAR__KAFKA__SECURITY_PROTOCOL=plaintext` for a broker without authentication).
fn consumer(bootstrap: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    let analyst = "analyst";
    let mut settings = platform::config::KafkaSettings::local_defaults(analyst);
    settings.bootstrap_servers = bootstrap.to_owned();
    if let Ok(password) = std::env::var("BAZAAR_KAFKA_PASSWORD") {
        settings.sasl_password = password.into();
    }
    if let Ok(protocol) = std::env::var("BAZAAR__KAFKA__SECURITY_PROTOCOL") {
        settings.security_protocol = protocol;
    }
    Ok(messaging::client::base_config(&settings)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("client.id", "bazaar-stack-bench")
        .set("log_level", "3")
        .create()?)
}

impl LagProbe {
    /// `topics` are full topic names (with any deployment prefix).
    pub fn new(bootstrap: &str, groups: &[String], topics: &[String]) -> anyhow::Result<Self> {
        let watermarks = consumer(bootstrap, "bazaar-stack-bench-watermarks")?;
        let mut partitions = Vec::new();
        for topic in topics {
            let metadata = watermarks.fetch_metadata(Some(topic), TIMEOUT)?;
            for found in metadata.topics() {
                if found.error().is_some() {
                    anyhow::bail!("topic {topic} is not there: {:?}", found.error());
                }
                for partition in found.partitions() {
                    partitions.push((topic.clone(), partition.id()));
                }
            }
        }
        let groups = groups
            .iter()
            .map(|group| Ok((group.clone(), consumer(bootstrap, group)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            groups,
            watermarks,
            partitions,
        })
    }

    /// Lag per group (messages not yet committed). Blocking: call from `spawn_blocking`.
    pub fn lag(&self) -> anyhow::Result<BTreeMap<String, i64>> {
        let mut high = BTreeMap::new();
        for (topic, partition) in &self.partitions {
            let (low, hi) = self
                .watermarks
                .fetch_watermarks(topic, *partition, TIMEOUT)?;
            high.insert((topic.clone(), *partition), (low, hi));
        }
        let mut list = TopicPartitionList::new();
        for (topic, partition) in &self.partitions {
            list.add_partition(topic, *partition);
        }
        let mut lags = BTreeMap::new();
        for (group, consumer) in &self.groups {
            let committed = consumer.committed_offsets(list.clone(), TIMEOUT)?;
            // A topic counts for a group when the group has committed on any of its partitions.
            let mut consumed_topics = std::collections::BTreeSet::new();
            for element in committed.elements() {
                if let Offset::Offset(_) = element.offset() {
                    consumed_topics.insert(element.topic().to_owned());
                }
            }
            let mut lag = 0;
            for element in committed.elements() {
                if !consumed_topics.contains(element.topic()) {
                    continue;
                }
                let Some((low, hi)) = high.get(&(element.topic().to_owned(), element.partition()))
                else {
                    continue;
                };
                lag += match element.offset() {
                    Offset::Offset(offset) => (hi - offset).max(0),
                    // Never committed on this partition: everything in it is unread.
                    _ => (hi - low).max(0),
                };
            }
            lags.insert(group.clone(), lag);
        }
        Ok(lags)
    }
}
