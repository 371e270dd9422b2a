//! The broker is a real Apache Kafka: topics from the catalog, produce, and consume in a group.

use std::time::Duration;

use bazaar_integration_tests::{eventually, isolated_kafka};
use futures::StreamExt;
use messaging::TopicCatalog;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test]
async fn applying_the_topic_catalog_twice_changes_nothing_the_second_time() {
    let kafka = isolated_kafka("topics");
    let catalog = TopicCatalog::bundled().expect("bundled catalog");
    let declared = catalog.all_topics().len();

    let first = messaging::topics::apply(&catalog, &kafka)
        .await
        .expect("first apply");
    assert_eq!(
        first.created.len(),
        declared,
        "first apply creates every topic: {first:?}"
    );
    assert!(first.created.contains(&kafka.topic("order-events.dlq")));

    let second = messaging::topics::apply(&catalog, &kafka)
        .await
        .expect("second apply");
    assert!(
        !second.changed_anything(),
        "second apply must be a no-op: {second:?}"
    );
    assert_eq!(second.unchanged.len(), declared);
}

#[tokio::test]
async fn a_consumer_group_reads_what_was_produced_and_commits_its_offsets() {
    let kafka = isolated_kafka("roundtrip");
    let catalog = TopicCatalog::bundled().expect("bundled catalog");
    messaging::topics::apply(&catalog, &kafka)
        .await
        .expect("apply topics");
    let topic = kafka.topic("order-events");

    let producer: FutureProducer =
        messaging::relay::producer_config(&kafka, Duration::from_millis(1))
            .create()
            .expect("producer");
    let sent = 30;
    for i in 0..sent {
        let key = format!("order-{}", i % 7);
        let payload = format!("event-{i}");
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .expect("broker acknowledged the message");
    }

    let consumer: StreamConsumer = messaging::client::base_config(&kafka)
        .set("group.id", &kafka.group_id)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut received = Vec::new();
    {
        let mut stream = consumer.stream();
        while received.len() < sent {
            let message = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("a message within 30 s")
                .expect("stream open")
                .expect("no consume error");
            received
                .push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned());
        }
    }
    received.sort();
    let mut expected: Vec<String> = (0..sent).map(|i| format!("event-{i}")).collect();
    expected.sort();
    assert_eq!(received, expected);

    consumer
        .commit_consumer_state(CommitMode::Async)
        .expect("commit");
    let consumer = std::sync::Arc::new(consumer);
    let committed_total = eventually(
        "committed offsets to reach the produced count",
        Duration::from_secs(20),
        || {
            let consumer = consumer.clone();
            async move {
                // `committed` blocks on a broker round trip: keep it off the tokio workers.
                let total = tokio::task::spawn_blocking(move || {
                    consumer.committed(Duration::from_secs(5)).map(|list| {
                        list.elements()
                            .iter()
                            .filter_map(|element| element.offset().to_raw())
                            .filter(|offset| *offset >= 0)
                            .sum::<i64>()
                    })
                })
                .await
                .ok()?
                .ok()?;
                (total == i64::try_from(sent).ok()?).then_some(total)
            }
        },
    )
    .await;
    assert_eq!(committed_total, 30);
}
