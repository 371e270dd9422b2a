//! Watches the cluster's consumer groups from outside, as an operator would: every 250 ms each
//! group's state and members, as the group coordinator describes them. From that come the
//! rebalance times of a scenario (how long a group was not `Stable`) and the proof that the
//! instances of a service share its partitions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use platform::config::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

/// One look at one group.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    /// The coordinator's word (`Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty`),
    /// or `Unavailable` when no coordinator answered.
    pub state: String,
    /// Each member's client host and its assigned partitions (`topic` → partitions).
    pub members: Vec<Member>,
}

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

/// A stretch during which a group was not `Stable`.
#[derive(Debug, Clone, Copy)]
pub struct Rebalance {
    pub started: Instant,
    pub lasted: Duration,
}

/// Polls groups in the background until stopped.
#[derive(Debug)]
pub struct GroupWatch {
    samples: Arc<Mutex<BTreeMap<String, Vec<Sample>>>>,
    stop: CancellationToken,
}

impl GroupWatch {
    /// Starts watching `groups` (full group ids) through `kafka`'s brokers.
    pub fn start(kafka: &KafkaSettings, groups: Vec<String>) -> anyhow::Result<Self> {
        let config = messaging::client::base_config(kafka);
        let mut consumer: BaseConsumer = config.create()?;
        let samples: Arc<Mutex<BTreeMap<String, Vec<Sample>>>> = Arc::default();
        let stop = CancellationToken::new();
        let (recording, stopped) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut failures = 0;
            while !stopped.is_cancelled() {
                for group in &groups {
                    let sample = look(&consumer, group);
                    if sample.state == "Unavailable" {
                        failures += 1;
                    } else {
                        failures = 0;
                    }
                    if let Ok(mut samples) = recording.lock() {
                        samples.entry(group.clone()).or_default().push(sample);
                    }
                }
                // Listing groups asks every broker the client knows, and a client keeps a dead
                // broker for minutes: after a few failed looks a fresh client (which learns
                // only the live brokers) looks instead, so the watch measures the group, not
                // its own client.
                if failures >= 2
                    && let Ok(fresh) = config.create()
                {
                    consumer = fresh;
                    failures = 0;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Ok(Self { samples, stop })
    }

    /// The latest look at `group`.
    pub fn latest(&self, group: &str) -> Option<Sample> {
        self.samples
            .lock()
            .ok()?
            .get(group)
            .and_then(|samples| samples.last().cloned())
    }

    /// Waits until `group` is `Stable` with `members` members, each holding a partition.
    pub async fn settled(
        &self,
        group: &str,
        members: usize,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(sample) = self.latest(group)
                && sample.state == "Stable"
                && sample.members.len() == members
                && sample
                    .members
                    .iter()
                    .all(|member| member.partition_count() > 0)
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "group {group} did not settle with {members} member(s) each holding partitions within {within:?}: last seen {:?}",
                self.latest(group)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every stretch since `since` during which a group was not `Stable` (an `Empty` group
    /// counts too: nobody consumes). A stretch still open ends now.
    pub fn rebalances(&self, since: Instant) -> BTreeMap<String, Vec<Rebalance>> {
        let samples = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        samples
            .into_iter()
            .map(|(group, samples)| (group, unsettled_stretches(&samples, since)))
            .collect()
    }

    /// The longest rebalance of each group since `since` (zero when there was none).
    pub fn longest_rebalances(&self, since: Instant) -> BTreeMap<String, Duration> {
        self.rebalances(since)
            .into_iter()
            .map(|(group, stretches)| {
                let longest = stretches
                    .iter()
                    .map(|stretch| stretch.lasted)
                    .max()
                    .unwrap_or_default();
                (group, longest)
            })
            .collect()
    }
}

impl Drop for GroupWatch {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn unsettled_stretches(samples: &[Sample], since: Instant) -> Vec<Rebalance> {
    let mut stretches = Vec::new();
    let mut open: Option<Instant> = None;
    for sample in samples.iter().filter(|sample| sample.at >= since) {
        match (sample.state == "Stable", open) {
            (false, None) => open = Some(sample.at),
            (true, Some(started)) => {
                stretches.push(Rebalance {
                    started,
                    lasted: sample.at - started,
                });
                open = None;
            }
            _ => {}
        }
    }
    if let Some(started) = open {
        stretches.push(Rebalance {
            started,
            lasted: started.elapsed(),
        });
    }
    stretches
}

fn look(consumer: &BaseConsumer, group: &str) -> Sample {
    let at = Instant::now();
    let Ok(list) = consumer.fetch_group_list(Some(group), Duration::from_secs(2)) else {
        return Sample {
            at,
            state: "Unavailable".into(),
            members: Vec::new(),
        };
    };
    let Some(info) = list.groups().iter().find(|info| info.name() == group) else {
        return Sample {
            at,
            state: "Unavailable".into(),
            members: Vec::new(),
        };
    };
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
    Sample {
        at,
        state: info.state().to_owned(),
        members,
    }
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

    #[test]
    fn stretches_out_of_stable_are_measured() {
        let t0 = Instant::now();
        let sample = |ms: u64, state: &str| Sample {
            at: t0 + Duration::from_millis(ms),
            state: state.into(),
            members: Vec::new(),
        };
        let samples = [
            sample(0, "Stable"),
            sample(250, "PreparingRebalance"),
            sample(500, "CompletingRebalance"),
            sample(750, "Stable"),
            sample(1000, "Unavailable"),
            sample(1250, "Stable"),
        ];
        let stretches = unsettled_stretches(&samples, t0);
        let lasted: Vec<u128> = stretches.iter().map(|s| s.lasted.as_millis()).collect();
        assert_eq!(lasted, [500, 250]);
    }
}
