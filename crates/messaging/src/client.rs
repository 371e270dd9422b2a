//! librdkafka settings. Its defaults differ from the Java client's in ways that bite, so every
//! client Bazaar creates starts from [`base_config`].

use std::time::Duration;

use platform::config::KafkaSettings;
use platform::http::ReadinessCheck;
use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, Producer};

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
