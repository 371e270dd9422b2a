//! How far a consumer group has come: for tests that must know a service has read everything
//! published so far, including messages that changed nothing (duplicates leave no other trace).

use std::time::Duration;

use platform::config::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::eventually;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Messages on `topics` (logical names) that `group` has not committed yet.
pub async fn lag(kafka: &KafkaSettings, group: &str, topics: &[&str]) -> anyhow::Result<i64> {
    let mut config = messaging::client::base_config(kafka);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    let names: Vec<String> = topics.iter().map(|topic| kafka.topic(topic)).collect();
    tokio::task::spawn_blocking(move || {
        // Never subscribes: it only asks the group coordinator for the group's offsets.
        let consumer: BaseConsumer = config.create()?;
        let mut total = 0;
        for name in &names {
            let metadata = consumer.fetch_metadata(Some(name), TIMEOUT)?;
            let partitions = metadata
                .topics()
                .first()
                .map_or(0, |topic| topic.partitions().len());
            let mut wanted = TopicPartitionList::new();
            for partition in 0..partitions {
                wanted.add_partition(name, i32::try_from(partition)?);
            }
            let committed = consumer.committed_offsets(wanted, TIMEOUT)?;
            for partition in 0..partitions {
                let partition = i32::try_from(partition)?;
                let (low, high) = consumer.fetch_watermarks(name, partition, TIMEOUT)?;
                let done = committed
                    .find_partition(name, partition)
                    .and_then(|element| match element.offset() {
                        Offset::Offset(offset) => Some(offset),
                        _ => None,
                    })
                    .unwrap_or(low);
                total += high - done;
            }
        }
        Ok(total)
    })
    .await?
}

/// Waits until `group` has committed everything on `topics`.
pub async fn wait_until_consumed(kafka: &KafkaSettings, group: &str, topics: &[&str]) {
    eventually(
        &format!("group {group} to consume {topics:?}"),
        Duration::from_secs(60),
        || async { (lag(kafka, group, topics).await.ok()? == 0).then_some(()) },
    )
    .await;
}
