//! Several instances of one service behind the gateway: which one gets the next request.
//!
//! - **Least outstanding**: a request goes to the instance with the fewest requests in flight
//!   from this gateway (ties in turn, round-robin), so a slow instance gets less.
//! - **Health**: every `upstreams.health_interval_ms` the gateway asks each instance's
//!   `/healthz`. One that does not answer 200 (unreachable, or draining before it stops: see
//!   `platform::shutdown`) is left out until it does.
//! - **Refused connections**: an instance that refused a connection is left out for
//!   `upstreams.down_for_ms`, or until its health check passes again.
//! - When every instance is left out, they are tried anyway: the gateway never refuses on its
//!   own a request that an instance might still serve.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use platform::http::client::{HttpClient, error_chain};

/// One instance of a service.
#[derive(Debug)]
pub struct Instance {
    pub base_url: String,
    in_flight: AtomicUsize,
    /// Until when (ms since the balancer's epoch) it is left out for refusing a connection.
    down_until_ms: AtomicU64,
    /// What its last health check said.
    healthy: AtomicBool,
}

impl Instance {
    fn new(base_url: &str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            in_flight: AtomicUsize::new(0),
            down_until_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
        }
    }
}

/// Which endpoint of an instance a check asks.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// `/healthz`, for the rotation: cheap, and says only that the process serves.
    Alive,
    /// `/readyz`, for the gateway's own readiness: the instance's dependencies answer too.
    Ready,
}

/// The instances of one service and the choice between them.
#[derive(Debug)]
pub struct Balancer {
    pub service: &'static str,
    instances: Vec<Instance>,
    cursor: AtomicUsize,
    epoch: Instant,
    down_for: Duration,
}

/// A request counted against an instance until it is dropped (with the answer's body).
#[derive(Debug)]
pub struct InFlight {
    balancer: Arc<Balancer>,
    index: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.balancer.instances[self.index]
            .in_flight
            .fetch_sub(1, Ordering::SeqCst);
    }
}

impl Balancer {
    /// `base_urls` must not be empty.
    pub fn new(service: &'static str, base_urls: &[String], down_for: Duration) -> Arc<Self> {
        assert!(
            !base_urls.is_empty(),
            "{service} needs at least one instance"
        );
        Arc::new(Self {
            service,
            instances: base_urls.iter().map(|url| Instance::new(url)).collect(),
            cursor: AtomicUsize::new(0),
            epoch: Instant::now(),
            down_for,
        })
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    pub fn instance(&self, index: usize) -> &Instance {
        &self.instances[index]
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the instance is in the rotation: healthy, and not left out for a refusal.
    pub fn is_available(&self, index: usize) -> bool {
        let instance = &self.instances[index];
        instance.healthy.load(Ordering::SeqCst)
            && instance.down_until_ms.load(Ordering::SeqCst) <= self.now_ms()
    }

    /// The instance for the next attempt, other than those in `tried`: an available one with the
    /// fewest requests in flight (ties in turn), else any untried one. `None` once every
    /// instance was tried.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let count = self.instances.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % count;
        (0..count)
            .map(|offset| (start + offset) % count)
            .filter(|index| !tried.contains(index))
            .min_by_key(|&index| {
                (
                    !self.is_available(index),
                    self.instances[index].in_flight.load(Ordering::SeqCst),
                )
            })
    }

    /// Counts a request against `index` until the guard is dropped.
    pub fn begin(self: &Arc<Self>, index: usize) -> InFlight {
        self.instances[index]
            .in_flight
            .fetch_add(1, Ordering::SeqCst);
        InFlight {
            balancer: self.clone(),
            index,
        }
    }

    /// The instance refused a connection: leave it out for a while.
    pub fn refused(&self, index: usize) {
        let until = self.now_ms() + u64::try_from(self.down_for.as_millis()).unwrap_or(u64::MAX);
        let instance = &self.instances[index];
        if instance.down_until_ms.swap(until, Ordering::SeqCst) <= self.now_ms() {
            tracing::warn!(
                service = self.service,
                instance = %instance.base_url,
                down_for_ms = self.down_for.as_millis() as u64,
                "instance refused a connection; left out of the rotation"
            );
        }
    }

    /// Records a health check's verdict, logging changes.
    fn checked(&self, index: usize, outcome: Result<(), String>) {
        let instance = &self.instances[index];
        let healthy = outcome.is_ok();
        if healthy {
            instance.down_until_ms.store(0, Ordering::SeqCst);
        }
        let was = instance.healthy.swap(healthy, Ordering::SeqCst);
        metrics::gauge!(
            "gateway_upstream_instance_healthy",
            "service" => self.service,
            "instance" => instance.base_url.clone(),
        )
        .set(if healthy { 1.0 } else { 0.0 });
        match (was, outcome) {
            (false, Ok(())) => tracing::info!(
                service = self.service,
                instance = %instance.base_url,
                "instance healthy; back in the rotation"
            ),
            (true, Err(why)) => tracing::warn!(
                service = self.service,
                instance = %instance.base_url,
                %why,
                "instance unhealthy; left out of the rotation"
            ),
            _ => {}
        }
    }

    /// Asks one instance's `/healthz` (alive and not draining) or `/readyz` (and its own
    /// dependencies answer).
    async fn probe(
        &self,
        index: usize,
        client: &HttpClient,
        timeout: Duration,
        check: Probe,
    ) -> Result<(), String> {
        let path = match check {
            Probe::Alive => "/healthz",
            Probe::Ready => "/readyz",
        };
        let url = format!("{}{path}", self.instances[index].base_url);
        let answer = client
            .send(client.get(&url).timeout(timeout))
            .await
            .map_err(|error| error_chain(&error))?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("{url} answered {}", answer.status()))
        }
    }

    /// Whether any instance is ready now, asking every instance's `/readyz` at once, each
    /// within `timeout` (the gateway's readiness, per service).
    pub async fn any_ready(&self, client: &HttpClient, timeout: Duration) -> Result<(), String> {
        let outcomes = futures::future::join_all(
            (0..self.instances.len()).map(|index| self.probe(index, client, timeout, Probe::Ready)),
        )
        .await;
        if outcomes.iter().any(Result::is_ok) {
            return Ok(());
        }
        Err(outcomes
            .into_iter()
            .filter_map(Result::err)
            .collect::<Vec<_>>()
            .join("; "))
    }

    /// Checks every instance every `interval`, for as long as the gateway runs.
    pub fn watch(self: &Arc<Self>, client: HttpClient, interval: Duration) {
        let balancer = self.clone();
        let timeout = interval.min(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let outcomes = futures::future::join_all(
                    (0..balancer.instances.len())
                        .map(|index| balancer.probe(index, &client, timeout, Probe::Alive)),
                )
                .await;
                for (index, outcome) in outcomes.into_iter().enumerate() {
                    balancer.checked(index, outcome);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer(count: usize) -> Arc<Balancer> {
        let urls: Vec<String> = (0..count)
            .map(|i| format!("http://127.0.0.1:{}/", 9000 + i))
            .collect();
        Balancer::new("order", &urls, Duration::from_secs(60))
    }

    #[test]
    fn instances_take_turns_when_none_is_busier() {
        let balancer = balancer(3);
        let picks: Vec<usize> = (0..6).map(|_| balancer.pick(&[]).expect("one")).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(balancer.instance(0).base_url, "http://127.0.0.1:9000");
    }

    #[test]
    fn the_instance_with_fewest_requests_in_flight_comes_first() {
        let balancer = balancer(3);
        let _busy = [balancer.begin(0), balancer.begin(0), balancer.begin(1)];
        for _ in 0..3 {
            assert_eq!(balancer.pick(&[]), Some(2));
        }
        drop(_busy);
        assert_eq!(
            balancer.instance(0).in_flight.load(Ordering::SeqCst),
            0,
            "guards give their count back"
        );
    }

    #[test]
    fn a_refusing_or_unhealthy_instance_is_left_out_unless_nothing_else_is_left() {
        let balancer = balancer(3);
        balancer.refused(0);
        balancer.checked(1, Err("draining".into()));
        for _ in 0..4 {
            assert_eq!(balancer.pick(&[]), Some(2));
        }
        // Once the available one was tried, the others are tried anyway.
        let next = balancer.pick(&[2]).expect("another");
        assert!(next == 0 || next == 1);
        assert_eq!(balancer.pick(&[0, 1, 2]), None);
        // A passing health check brings both back.
        balancer.checked(0, Ok(()));
        balancer.checked(1, Ok(()));
        assert!(balancer.is_available(0) && balancer.is_available(1));
    }

    #[test]
    fn a_refusal_lapses_after_its_time() {
        let urls = vec!["http://a".to_owned(), "http://b".to_owned()];
        let balancer = Balancer::new("order", &urls, Duration::from_millis(30));
        balancer.refused(0);
        assert!(!balancer.is_available(0));
        std::thread::sleep(Duration::from_millis(40));
        assert!(balancer.is_available(0));
    }
}
