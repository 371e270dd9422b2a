//! Consumer groups as the group coordinator describes them: state, members, and each member's
//! assigned partitions. For tests that must prove several instances share a group's work.

use std::collections::BTreeMap;
use std::time::Duration;

use platform::config::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::eventually;

#[derive(Debug, Clone)]
pub struct Member {
    pub host: String,
    pub partitions: BTreeMap<String, Vec<i32>>,
}

impl Member {
    pub fn partition_count(&self) -> usize {
        self.partitions.values().map(Vec::len).sum()
    }
}

/// The coordinator's state of `group` (`Stable`, `PreparingRebalance`, `Empty`, ...) and its
/// members; `None` when no coordinator answered within `timeout`. Blocks.
pub fn describe(
    consumer: &BaseConsumer,
    group: &str,
    timeout: Duration,
) -> Option<(String, Vec<Member>)> {
    let list = consumer.fetch_group_list(Some(group), timeout).ok()?;
    let info = list.groups().iter().find(|info| info.name() == group)?;
    let members = info
        .members()
        .iter()
        .map(|member| Member {
            host: member.client_host().to_owned(),
            partitions: member
                .assignment()
                .map(parse_assignment)
                .unwrap_or_default(),
        })
        .collect();
    Some((info.state().to_owned(), members))
}

/// Waits until `group` is `Stable` with `members` members, each holding a partition; returns
/// how many partitions each holds.
pub async fn wait_until_shared(
    kafka: &KafkaSettings,
    group: &str,
    members: usize,
    within: Duration,
) -> Vec<usize> {
    let consumer: BaseConsumer = messaging::client::base_config(kafka)
        .create()
        .expect("an admin consumer");
    let consumer = std::sync::Arc::new(consumer);
    eventually(
        &format!("group {group} to be Stable with {members} members sharing its partitions"),
        within,
        || {
            let (consumer, group) = (consumer.clone(), group.to_owned());
            async move {
                let (state, seen) = tokio::task::spawn_blocking(move || {
                    describe(&consumer, &group, Duration::from_secs(2))
                })
                .await
                .ok()??;
                let counts: Vec<usize> = seen.iter().map(Member::partition_count).collect();
                (state == "Stable" && counts.len() == members && counts.iter().all(|n| *n > 0))
                    .then_some(counts)
            }
        },
    )
    .await
}

/// Reads a consumer protocol assignment (KIP-62 / KIP-429 `ConsumerProtocolAssignment`): a
/// version, then for each topic its name and partitions. What follows (user data) is ignored;
/// anything malformed yields what was read so far.
pub fn parse_assignment(bytes: &[u8]) -> BTreeMap<String, Vec<i32>> {
    let mut reader = Reader { bytes, at: 0 };
    let mut assigned = BTreeMap::new();
    let parsed = (|| {
        let _version = reader.i16()?;
        let topics = reader.i32()?;
        for _ in 0..topics.max(0) {
            let length = usize::try_from(reader.i16()?).ok()?;
            let topic = String::from_utf8_lossy(reader.take(length)?).into_owned();
            let count = reader.i32()?;
            let mut partitions = Vec::new();
            for _ in 0..count.max(0) {
                partitions.push(reader.i32()?);
            }
            assigned.insert(topic, partitions);
        }
        Some(())
    })();
    let _ = parsed;
    assigned
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at + length)?;
        self.at += length;
        Some(slice)
    }

    fn i16(&mut self) -> Option<i16> {
        self.take(2)
            .map(|bytes| i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|bytes| i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignment_reads_as_topics_and_partitions() {
        let mut bytes = vec![0, 1, 0, 0, 0, 2];
        for (topic, partitions) in [("a-events", vec![0, 3]), ("b", vec![5])] {
            bytes.extend_from_slice(&u16::try_from(topic.len()).unwrap().to_be_bytes());
            bytes.extend_from_slice(topic.as_bytes());
            bytes.extend_from_slice(&u32::try_from(partitions.len()).unwrap().to_be_bytes());
            for partition in partitions {
                bytes.extend_from_slice(&i32::to_be_bytes(partition));
            }
        }
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        let assigned = parse_assignment(&bytes);
        assert_eq!(assigned["a-events"], [0, 3]);
        assert_eq!(assigned["b"], [5]);
        assert!(parse_assignment(&[0, 1, 0]).is_empty());
    }
}
