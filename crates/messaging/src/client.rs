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

/// Settings shared by every client: where the brokers are and who is asking.
pub fn base_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("client.id", &settings.group_id)
        .set("socket.keepalive.enable", "true");
    config
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

/// How long a client may be left without any broker before it is replaced.
pub const STRANDED_AFTER: Duration = Duration::from_secs(15);

/// Notices a client that librdkafka has stranded: since 2.10 it drops every broker missing from
/// a Metadata response, and a KRaft cluster whose brokers are all fenced (one broker paused
/// past its session timeout is enough) answers with none. The client is then left with no
/// broker to ask and never bootstraps again (confluentinc/librdkafka#5301): its consumer group
/// and its producer stall for good while the cluster is healthy. Fed by the client's statistics
/// (`statistics.interval.ms`), so the owner can replace the client.
#[derive(Debug, Clone, Default)]
pub struct BrokerWatch {
    stranded_since: Arc<Mutex<Option<Instant>>>,
}

impl BrokerWatch {
    /// Records what one statistics report says.
    pub fn observe(&self, statistics: &Statistics) {
        self.record(is_stranded(statistics));
    }

    fn record(&self, stranded: bool) {
        if let Ok(mut since) = self.stranded_since.lock() {
            match (stranded, *since) {
                (true, None) => *since = Some(Instant::now()),
                (false, Some(_)) => *since = None,
                _ => {}
            }
        }
    }

    /// How long the client has had no broker; zero while it has one.
    pub fn stranded_for(&self) -> Duration {
        self.stranded_since
            .lock()
            .ok()
            .and_then(|since| since.map(|at| at.elapsed()))
            .unwrap_or_default()
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
}
