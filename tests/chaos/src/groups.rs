//! Watches the cluster's consumer groups from outside, as an operator would: every 250 ms each
//! group's state and members, as the group coordinator describes them. From that come the
//! rebalance times of a scenario (how long a group was not `Stable`) and the proof that the
//! instances of a service share its partitions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use bazaar_integration_tests::groups::Member;
use bazaar_integration_tests::groups::describe;
use platform::config::KafkaSettings;
use rdkafka::consumer::BaseConsumer;
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
    match describe(consumer, group, Duration::from_secs(2)) {
        Some((state, members)) => Sample { at, state, members },
        None => Sample {
            at,
            state: "Unavailable".into(),
            members: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
