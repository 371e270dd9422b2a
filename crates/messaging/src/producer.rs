//! A Kafka producer whose sends are futures of their delivery reports, polled by one thread that
//! sleeps while nothing happens.
//!
//! Why not rdkafka's `FutureProducer`: its polling thread polls in 100 ms rounds, and a round's
//! last millisecond is spent spinning (the remaining wait is truncated to whole milliseconds, so
//! under 1 ms it becomes a non-blocking poll, repeated until the deadline). Measured with `perf`
//! on an idle service, 55 % of that thread's samples were `clock_gettime` under
//! `Deadline::elapsed`, and the thread was two thirds of the idle service's CPU (~0.4 % of a
//! core per service). Here the thread polls in [`POLL_ROUND`] rounds: a delivery report wakes it
//! at once, so only idle wake-ups and shutdown wait for a round's end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::client::OAuthToken;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{DeliveryResult, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use tokio::sync::oneshot;

/// How long the polling thread waits for an event in one call.
pub const POLL_ROUND: Duration = Duration::from_secs(1);

/// Where a message landed: partition and offset.
pub type Delivered = (i32, i64);

/// A message's delivery report, once librdkafka has one.
pub type Delivery = oneshot::Receiver<Result<Delivered, KafkaError>>;

/// Wraps a client context (statistics, logs, errors go to it) and completes each message's
/// [`Delivery`] from its report.
#[derive(Debug)]
pub struct DeliveryContext<C> {
    inner: C,
}

impl<C: ClientContext> ClientContext for DeliveryContext<C> {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = C::ENABLE_REFRESH_OAUTH_TOKEN;

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.inner.log(level, fac, log_message);
    }

    fn stats(&self, statistics: Statistics) {
        self.inner.stats(statistics);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.inner.stats_raw(statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.inner.error(error, reason);
    }

    fn generate_oauth_token(
        &self,
        oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.inner.generate_oauth_token(oauthbearer_config)
    }
}

impl<C: ClientContext> ProducerContext for DeliveryContext<C> {
    type DeliveryOpaque = Box<oneshot::Sender<Result<Delivered, KafkaError>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, reply: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((error, _)) => Err(error.clone()),
        };
        // The sender may have stopped waiting (it is shutting down): nothing to tell.
        let _ = reply.send(outcome);
    }
}

/// A producer and the thread that polls it for delivery reports and statistics.
pub struct DeliveryProducer<C: ClientContext + 'static> {
    producer: Arc<BaseProducer<DeliveryContext<C>>>,
    stop: Arc<AtomicBool>,
    poller: Option<JoinHandle<()>>,
}

impl<C: ClientContext + 'static> DeliveryProducer<C> {
    /// Creates the producer from `config`, with `context` receiving its statistics and logs.
    pub fn create(config: &ClientConfig, context: C) -> KafkaResult<Self> {
        let producer: Arc<BaseProducer<DeliveryContext<C>>> =
            Arc::new(config.create_with_context(DeliveryContext { inner: context })?);
        let stop = Arc::new(AtomicBool::new(false));
        let poller = std::thread::Builder::new()
            .name("kafka-delivery".to_owned())
            .spawn({
                let producer = Arc::clone(&producer);
                let stop = Arc::clone(&stop);
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        producer.poll(POLL_ROUND);
                    }
                }
            })
            .map_err(|error| KafkaError::ClientCreation(error.to_string()))?;
        Ok(Self {
            producer,
            stop,
            poller: Some(poller),
        })
    }

    /// Enqueues a message; its delivery report completes the returned [`Delivery`]. Fails at
    /// once if librdkafka refuses it (its queue is full, the message too large).
    pub fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<Delivery, KafkaError> {
        let (reply, delivery) = oneshot::channel();
        let record = BaseRecord::with_opaque_to(topic, Box::new(reply))
            .key(key)
            .payload(payload)
            .headers(headers);
        self.producer.send(record).map_err(|(error, _)| error)?;
        Ok(delivery)
    }

    /// Waits until every enqueued message has its delivery report, or `timeout`. Blocks: call
    /// it off the tokio workers.
    pub fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        self.producer.flush(timeout)
    }
}

impl<C: ClientContext + 'static> Drop for DeliveryProducer<C> {
    /// Stops the polling thread (within one [`POLL_ROUND`]); dropping the producer then purges
    /// what was not delivered. Blocks: drop it off the tokio workers.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
    }
}

impl<C: ClientContext + 'static> std::fmt::Debug for DeliveryProducer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryProducer")
            .field("in_flight", &self.producer.in_flight_count())
            .finish_non_exhaustive()
    }
}
