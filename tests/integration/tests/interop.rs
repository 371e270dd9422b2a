//! Bazaar's topics are readable by ordinary Kafka tools: Confluent's own Avro deserializer
//! decodes them through the schema registry, and kcat reads keys and headers.

use std::path::Path;
use std::process::Command;

use bazaar_integration_tests::{
    fresh_messaging_database, isolated_kafka, librdkafka_auth_properties, schema_registry_url,
};
use events::{Event, EventMetadata, OrderCreated, OrderLine};
use messaging::relay::MarkPublished;
use messaging::{Relay, RelaySettings};
use serde_json::Value;

fn python() -> String {
    std::env::var("BAZAAR_TEST_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cache/bazaar/pyvenv/bin/python")
    })
}

async fn publish_one_order() -> (platform::config::KafkaSettings, OrderCreated) {
    let (_, pool) = fresh_messaging_database("interop").await.expect("database");
    let kafka = isolated_kafka("interop");
    messaging::topics::apply(
        &messaging::TopicCatalog::bundled().expect("catalog"),
        &kafka,
    )
    .await
    .expect("topics");
    let order = OrderCreated {
        order_id: uuid::Uuid::now_v7().to_string(),
        user_id: "user-7".into(),
        lines: vec![OrderLine {
            sku: "TEE-BLK-M".into(),
            quantity: 2,
            unit_price_minor: 1999,
        }],
        total_minor: 3998,
        currency: "EUR".into(),
        payment_token: "tok_visa".into(),
        shipping_address: "1 Main St, Springfield".into(),
        address: None,
    };
    let event = Event::from(order.clone());
    let mut tx = pool.begin().await.expect("begin");
    let metadata = EventMetadata::originating(event.type_name(), &order.order_id, None);
    messaging::outbox::append(&mut tx, &event, &metadata)
        .await
        .expect("append");
    tx.commit().await.expect("commit");
    let mut relay =
        Relay::new("interop", pool, kafka.clone(), RelaySettings::default()).expect("relay");
    assert_eq!(
        relay
            .publish_pending(MarkPublished::Yes)
            .await
            .expect("publish"),
        1
    );
    (kafka, order)
}

#[tokio::test]
async fn confluents_avro_deserializer_decodes_a_bazaar_event_through_the_registry() {
    let (kafka, order) = publish_one_order().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/confluent_avro_tap.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .args(["--bootstrap-servers", &kafka.bootstrap_servers])
            .args(["--registry", &schema_registry_url()])
            .args(["--topic", &kafka.topic("order-events")])
            .args(["--count", "1", "--timeout", "60"])
            .args(
                librdkafka_auth_properties(&kafka, messaging::client::SASL_MECHANISM)
                    .into_iter()
                    .flat_map(|property| ["-X".to_owned(), property]),
            )
            .output()
            .expect("run the Confluent client (installed by scripts/deps.sh)")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(line["type"], "com.bazaar.order.OrderCreated");
    assert_eq!(line["key"], order.order_id.as_str());
    assert_eq!(line["value"]["order_id"], order.order_id.as_str());
    assert_eq!(line["value"]["total_minor"], 3998);
    assert_eq!(line["value"]["lines"][0]["sku"], "TEE-BLK-M");
    assert_eq!(line["headers"]["event-type"], "OrderCreated");
    assert_eq!(line["headers"]["correlation-id"], order.order_id.as_str());
}

#[tokio::test]
async fn kcat_reads_keys_and_metadata_headers() {
    let (kafka, order) = publish_one_order().await;
    let output = tokio::task::spawn_blocking(move || {
        Command::new("kcat")
            .args([
                "-C",
                "-b",
                &kafka.bootstrap_servers,
                "-t",
                &kafka.topic("order-events"),
            ])
            .args(["-o", "beginning", "-c", "1", "-e", "-q"])
            .args(["-f", "%k|%h\n"])
            .args(
                librdkafka_auth_properties(&kafka, "PLAIN")
                    .into_iter()
                    .flat_map(|property| ["-X".to_owned(), property]),
            )
            .output()
            .expect("run kcat (installed by scripts/deps.sh)")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (key, headers) = stdout.trim().split_once('|').expect("key|headers");
    assert_eq!(key, order.order_id);
    assert!(headers.contains("event-type=OrderCreated"), "{headers}");
    assert!(headers.contains("traceparent=00-"), "{headers}");
}
