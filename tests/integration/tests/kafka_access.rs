//! Kafka authenticates every client and lets each principal do only what its ACLs allow,
//! against the real broker (`make test` starts it with authentication on): a service cannot
//! produce to another service's topic, a client without credentials gets nowhere, and the
//! analyst's read-only principal can tap a topic but not produce to it.
//!
//! Each test grants the services' principals what `bazaar access` derives for the test's own
//! topic prefix (applied by `infra/kafka/kafkactl.sh access`, as the brokers' super user), so
//! the grants under test are the ones a deployment gets.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use bazaar_integration_tests::publisher::Publisher;
use bazaar_integration_tests::{bazaar_binary, eventually, isolated_kafka};
use events::UserRegistered;
use platform::config::{KafkaSettings, local_kafka_password};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

const DEADLINE: Duration = Duration::from_secs(30);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The test's topics (as the tests' principal), and the grants `bazaar access` derives for
/// them, applied to the broker.
async fn topics_with_grants(label: &str) -> KafkaSettings {
    let kafka = isolated_kafka(label);
    messaging::topics::apply(
        &messaging::TopicCatalog::bundled().expect("catalog"),
        &kafka,
    )
    .await
    .expect("topics");
    let prefix = kafka.topic_prefix.clone();
    let groups = group_prefix(&kafka);
    tokio::task::spawn_blocking(move || {
        let printed = Command::new(bazaar_binary())
            .args([
                "access",
                "--topic-prefix",
                &prefix,
                "--group-prefix",
                &groups,
            ])
            .output()
            .expect("bazaar access runs");
        assert!(printed.status.success(), "{printed:?}");
        // The principals exist already (every broker start creates them); only the grants.
        let grants: String = String::from_utf8(printed.stdout)
            .expect("utf-8")
            .lines()
            .filter(|line| line.starts_with("allow "))
            .map(|line| format!("{line}\n"))
            .collect();
        assert!(grants.contains(&format!(
            "allow order TOPIC LITERAL {prefix}order-events WRITE"
        )));
        let mut apply = Command::new(repo_root().join("infra/kafka/kafkactl.sh"))
            .args(["access", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("kafkactl runs");
        std::io::Write::write_all(&mut apply.stdin.take().expect("stdin"), grants.as_bytes())
            .expect("grants written");
        let status = apply.wait().expect("kafkactl finishes");
        assert!(status.success(), "kafkactl access failed");
    })
    .await
    .expect("join");
    kafka
}

/// The test's consumer groups are `<group prefix><service>`, as a deployment's `bazaar-<service>`.
fn group_prefix(kafka: &KafkaSettings) -> String {
    format!("{}-", kafka.group_id)
}

/// `settings` as one of the deployment's principals, with its local password.
fn as_principal(kafka: &KafkaSettings, principal: &str) -> KafkaSettings {
    kafka.as_principal(principal, local_kafka_password(principal))
}

/// Produces one record to the logical `topic` as `kafka` say; the broker's verdict.
async fn produce(kafka: &KafkaSettings, topic: &str) -> Result<(), KafkaError> {
    let producer: FutureProducer = messaging::client::base_config(kafka)
        .set("message.timeout.ms", "15000")
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(&kafka.topic(topic))
                .key("security-test")
                .payload("not an event"),
            Duration::from_secs(15),
        )
        .await
        .map(|_| ())
        .map_err(|(error, _)| error)
}

fn refused(outcome: &Result<(), KafkaError>) -> bool {
    matches!(
        outcome,
        Err(KafkaError::MessageProduction(
            RDKafkaErrorCode::TopicAuthorizationFailed
        ))
    )
}

#[tokio::test]
async fn a_service_produces_to_its_own_topics_and_is_refused_on_another_services() {
    let kafka = topics_with_grants("acl-producers").await;
    // The owner may; a dead-letter copy of what a service consumes is its to write too.
    produce(&as_principal(&kafka, "order"), "order-events")
        .await
        .expect("order writes order-events");
    produce(&as_principal(&kafka, "inventory"), "order-events.dlq")
        .await
        .expect("inventory parks what it consumes");
    // Another service may not, though it reads the topic.
    for (principal, topic) in [
        ("inventory", "order-events"),
        ("payment", "order-events"),
        ("order", "payment-events"),
        ("auth", "product-snapshots"),
        ("tests", "order-events"),
    ] {
        let settings = if principal == "tests" {
            // The tests' principal may write test topics only: another prefix is refused.
            KafkaSettings {
                topic_prefix: String::new(),
                ..kafka.clone()
            }
        } else {
            as_principal(&kafka, principal)
        };
        let outcome = produce(&settings, topic).await;
        assert!(
            refused(&outcome),
            "{principal} producing to {topic}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn a_client_without_credentials_or_with_a_wrong_password_is_refused() {
    let kafka = isolated_kafka("acl-anonymous");
    // The control: the same broker answers an authenticated client.
    messaging::client::ping(&kafka, Duration::from_secs(10))
        .await
        .expect("an authenticated client is answered");
    let anonymous = KafkaSettings {
        security_protocol: "plaintext".into(),
        ..kafka.clone()
    };
    let wrong = kafka.as_principal("order", "not-the-password".to_owned().into());
    for (who, settings) in [("no credentials", anonymous), ("a wrong password", wrong)] {
        let outcome = messaging::client::ping(&settings, Duration::from_secs(3)).await;
        assert!(outcome.is_err(), "{who}: {outcome:?}");
        let produced = tokio::time::timeout(Duration::from_secs(20), async {
            let producer: FutureProducer = messaging::client::base_config(&settings)
                .set("message.timeout.ms", "3000")
                .create()
                .expect("producer");
            producer
                .send(
                    FutureRecord::to(&settings.topic("order-events"))
                        .key("k")
                        .payload("forged"),
                    Duration::from_secs(3),
                )
                .await
                .map(|_| ())
        })
        .await
        .expect("the producer gives up within its timeout");
        assert!(produced.is_err(), "{who} produced: {produced:?}");
    }
}

#[tokio::test]
async fn the_analyst_can_tap_a_topic_but_cannot_produce() {
    let kafka = topics_with_grants("acl-analyst").await;
    let publisher = Publisher::start("acl_analyst", &as_principal(&kafka, "auth"))
        .await
        .expect("auth's publisher");
    let user_id = uuid::Uuid::now_v7().to_string();
    publisher
        .publish(&[UserRegistered {
            user_id: user_id.clone(),
            email: "ada@example.com".into(),
            display_name: "Ada".into(),
            registered_at: 1_764_000_000_000,
        }
        .into()])
        .await
        .expect("publish");
    eventually("the relay publishes", DEADLINE, || async {
        (publisher.unpublished().await.expect("count") == 0).then_some(())
    })
    .await;

    let tap = {
        let kafka = kafka.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(bazaar_binary())
                .args(["--bootstrap-servers", &kafka.bootstrap_servers])
                .args(["--topic-prefix", &kafka.topic_prefix])
                .args(["--registry", &kafka.schema_registry_url])
                .args(["--principal", "analyst"])
                .args(["tap", "user-events", "--from-beginning", "--limit", "1"])
                .env_remove("BAZAAR_PRINCIPAL")
                .env_remove("BAZAAR_KAFKA_PASSWORD")
                .stdin(Stdio::null())
                .output()
                .expect("bazaar tap runs")
        })
        .await
        .expect("join")
    };
    let stdout = String::from_utf8_lossy(&tap.stdout);
    assert!(
        tap.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&tap.stderr)
    );
    assert!(stdout.contains(&user_id), "{stdout}");
    assert!(!stdout.contains("ada@example.com"), "masked: {stdout}");

    let analyst = as_principal(&kafka, "analyst");
    for topic in ["user-events", "order-events", "user-events.dlq"] {
        let outcome = produce(&analyst, topic).await;
        assert!(
            refused(&outcome),
            "analyst producing to {topic}: {outcome:?}"
        );
    }
    publisher.stop().await.expect("stop");
}

/// The first message (its key) or error that a consumer of the logical `topic` in `group` gets.
async fn consume_first(
    kafka: &KafkaSettings,
    group: &str,
    topic: &str,
) -> Result<Option<String>, KafkaError> {
    let consumer: StreamConsumer = messaging::client::base_config(kafka)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer
        .subscribe(&[&kafka.topic(topic)])
        .expect("subscribe");
    let message = tokio::time::timeout(DEADLINE, consumer.recv())
        .await
        .expect("a message or an error within the deadline")?;
    Ok(message
        .key()
        .map(|key| String::from_utf8_lossy(key).into_owned()))
}

#[tokio::test]
async fn a_service_reads_only_the_topics_it_consumes_in_its_own_group() {
    let kafka = topics_with_grants("acl-readers").await;
    let groups = group_prefix(&kafka);
    produce(&as_principal(&kafka, "order"), "order-events")
        .await
        .expect("order writes order-events");
    // payment consumes order-events, in its own group.
    let read = consume_first(
        &as_principal(&kafka, "payment"),
        &format!("{groups}payment"),
        "order-events",
    )
    .await;
    assert_eq!(
        read.expect("payment reads"),
        Some("security-test".to_owned())
    );
    // auth consumes nothing; payment may not use order's group.
    for (principal, group) in [("auth", "auth"), ("payment", "order")] {
        let outcome = consume_first(
            &as_principal(&kafka, principal),
            &format!("{groups}{group}"),
            "order-events",
        )
        .await;
        assert!(
            matches!(
                outcome,
                Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::GroupAuthorizationFailed
                ))
            ),
            "{principal} reading order-events in group {group}: {outcome:?}"
        );
    }
}
