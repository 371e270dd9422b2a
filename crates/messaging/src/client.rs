//! librdkafka settings. Its defaults differ from the Java client's in ways that bite, so every
//! client Bazaar creates starts from [`base_config`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use platform::config::KafkaSettings;
use platform::http::ReadinessCheck;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{ClientConfig, Statistics};
use secrecy::ExposeSecret;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka client error: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("kafka admin operation on {topic} failed: {code}")]
    Admin { topic: String, code: String },
    #[error("topic catalog: {0}")]
    Catalog(String),
    #[error("the blocking kafka call panicked or was cancelled")]
    Join(#[from] tokio::task::JoinError),
}

/// How long a client waits at most between two attempts to reach a broker it lost. librdkafka
/// doubles the wait from 100 ms after each failure, up to 10 s by default: a client that lost
/// its broker for 20 s was then up to 10 s late to notice it back. Attempts are cheap (a refused
/// connection on a LAN), so the waits stop growing at 1 s.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The SASL mechanism every Bazaar principal authenticates with.
pub const SASL_MECHANISM: &str = "SCRAM-SHA-512";

/// Settings shared by every client: where the brokers are and who is asking.
pub fn base_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("client.id", &settings.group_id)
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.ms", "100")
        .set(
            "reconnect.backoff.max.ms",
            RECONNECT_BACKOFF_MAX.as_millis().to_string(),
        );
    for (property, value) in auth_properties(settings) {
        config.set(property, value);
    }
    config
}

/// The librdkafka properties that authenticate a client as `settings` say (none when they do
/// not): for Bazaar's clients and for other librdkafka-based tools (kcat, Confluent's Python
/// client). The password is among them: never log them.
pub fn auth_properties(settings: &KafkaSettings) -> Vec<(&'static str, String)> {
    if !settings.authenticates() {
        return Vec::new();
    }
    vec![
        ("security.protocol", settings.security_protocol.clone()),
        ("sasl.mechanism", SASL_MECHANISM.to_owned()),
        ("sasl.username", settings.sasl_username.clone()),
        (
            "sasl.password",
            settings.sasl_password.expose_secret().to_owned(),
        ),
    ]
}

pub fn admin_client(
    settings: &KafkaSettings,
) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    Ok(base_config(settings).create()?)
}

/// Fetches cluster metadata; succeeds only when a broker answers.
pub async fn ping(settings: &KafkaSettings, timeout: Duration) -> Result<usize, KafkaError> {
    let config = base_config(settings);
    // librdkafka's metadata call blocks its caller, so keep it off the tokio workers.
    tokio::task::spawn_blocking(move || {
        let producer: BaseProducer = config.create()?;
        let metadata = producer.client().fetch_metadata(None, timeout)?;
        Ok(metadata.brokers().len())
    })
    .await?
}

/// `/readyz` check: the broker answers a metadata request.
pub fn kafka_readiness(settings: KafkaSettings) -> ReadinessCheck {
    ReadinessCheck::new("kafka", move || {
        let settings = settings.clone();
        Box::pin(async move {
            match ping(&settings, Duration::from_secs(2)).await {
                Ok(0) => Err("no broker in metadata".to_owned()),
                Ok(_) => Ok(()),
                Err(error) => Err(error.to_string()),
            }
        })
    })
}

/// How long a client may be left without any broker before it is replaced. A healthy client
/// never is, even while every broker is down (librdkafka keeps listing a broker it cannot
/// reach), so this need not wait long: statistics arrive every 5 s, so a stranded client is
/// replaced 5 to 10 s after it was stranded.
pub const STRANDED_AFTER: Duration = Duration::from_secs(5);
/// How long a consumer's group membership may stay unsettled, while it is connected to a
/// broker, before its client is replaced: longer than a rebalance after a member's death (the
/// 10 s session timeout and a join). The clock only runs while a broker connection is up, so
/// a long outage causes no replacements; once the broker is back, a client that never rejoins
/// is replaced within 15 to 20 s.
pub const UNSETTLED_AFTER: Duration = Duration::from_secs(15);

/// Notices a client that librdkafka has stranded: since 2.10 it drops every broker missing from
/// a Metadata response, and a KRaft cluster whose brokers are all fenced (one broker paused
/// past its session timeout is enough) answers with none. The client is then left with no
/// broker to ask and never bootstraps again (confluentinc/librdkafka#5301): its consumer group
/// and its producer stall for good while the cluster is healthy. Fed by the client's statistics
/// (`statistics.interval.ms`), so the owner can replace the client.
///
/// A consumer can also be left with a broker but a group coordinator it never asks for again
/// (requests queue up for a coordinator handle without a node), after the same event: its group
/// membership then never settles, which the watch measures too.
#[derive(Debug, Clone, Default)]
pub struct BrokerWatch {
    stranded_since: Arc<Mutex<Option<Instant>>>,
    unsettled_since: Arc<Mutex<Option<Instant>>>,
}

/// Starts or clears the clock of a condition.
fn clock(since: &Mutex<Option<Instant>>, holds: bool) {
    if let Ok(mut since) = since.lock() {
        match (holds, *since) {
            (true, None) => *since = Some(Instant::now()),
            (false, Some(_)) => *since = None,
            _ => {}
        }
    }
}

fn elapsed(since: &Mutex<Option<Instant>>) -> Duration {
    since
        .lock()
        .ok()
        .and_then(|since| since.map(|at| at.elapsed()))
        .unwrap_or_default()
}

impl BrokerWatch {
    /// Records what one statistics report says.
    pub fn observe(&self, statistics: &Statistics) {
        self.record(is_stranded(statistics));
        if let Some(group) = &statistics.cgrp {
            // While no broker is reachable nobody could settle a group: that is an outage,
            // which the client rides out by itself, not a stuck client.
            let settled = group.state == "up" && group.join_state == "steady";
            self.record_group(settled || !connected(statistics));
        }
    }

    fn record(&self, stranded: bool) {
        clock(&self.stranded_since, stranded);
    }

    fn record_group(&self, settled: bool) {
        clock(&self.unsettled_since, !settled);
    }

    /// How long the client has had no broker; zero while it has one.
    pub fn stranded_for(&self) -> Duration {
        elapsed(&self.stranded_since)
    }

    /// How long a consumer's group membership has not been settled (joined, assignment in
    /// place); zero while it is, and for clients without a group.
    pub fn unsettled_for(&self) -> Duration {
        elapsed(&self.unsettled_since)
    }

    /// Resolves once the client has had no broker for `after`.
    pub async fn stranded(&self, after: Duration) {
        while self.stranded_for() < after {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// True when a client knows no real broker any more: only its logical handles (the group
/// coordinator) and its internal one are left. A broker that is merely down stays listed.
pub fn is_stranded(statistics: &Statistics) -> bool {
    knows_no_broker(
        statistics
            .brokers
            .values()
            .map(|broker| broker.source.as_str()),
    )
}

/// True when the client has a live connection to a real broker.
fn connected(statistics: &Statistics) -> bool {
    statistics.brokers.values().any(|broker| {
        matches!(broker.source.as_str(), "learned" | "configured") && broker.state == "UP"
    })
}

/// Over the `source` of each broker handle a client lists.
fn knows_no_broker<'a>(mut sources: impl Iterator<Item = &'a str>) -> bool {
    !sources.any(|source| matches!(source, "learned" | "configured"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_with_only_logical_and_internal_handles_is_stranded() {
        assert!(knows_no_broker(["logical", "internal"].into_iter()));
        assert!(knows_no_broker(std::iter::empty()));
        assert!(!knows_no_broker(["configured", "internal"].into_iter()));
        assert!(!knows_no_broker(
            ["learned", "logical", "internal"].into_iter()
        ));
    }

    #[test]
    fn the_watch_measures_how_long_the_client_has_been_stranded() {
        let watch = BrokerWatch::default();
        assert_eq!(watch.stranded_for(), Duration::ZERO);
        watch.record(true);
        std::thread::sleep(Duration::from_millis(20));
        let first = watch.stranded_for();
        assert!(first >= Duration::from_millis(20), "{first:?}");
        watch.record(true);
        assert!(watch.stranded_for() >= first, "the clock keeps running");
        watch.record(false);
        assert_eq!(watch.stranded_for(), Duration::ZERO);
    }

    #[test]
    fn the_watch_measures_how_long_a_group_has_not_settled() {
        let watch = BrokerWatch::default();
        watch.record_group(true);
        assert_eq!(watch.unsettled_for(), Duration::ZERO);
        watch.record_group(false);
        std::thread::sleep(Duration::from_millis(20));
        assert!(watch.unsettled_for() >= Duration::from_millis(20));
        assert_eq!(watch.stranded_for(), Duration::ZERO, "a separate clock");
        watch.record_group(true);
        assert_eq!(watch.unsettled_for(), Duration::ZERO);
    }
}
