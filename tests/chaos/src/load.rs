//! A steady stream of checkouts: a few customers (some with declining cards), mostly common SKUs
//! and some scarce ones (rejections once sold out), a share cancelled by the customer right
//! after checkout. It keeps going whatever fails, and tallies what was accepted (202) and what
//! was not.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cluster::{COMMON_SKUS, Customer, SCARCE_SKUS};

#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// Checkouts started per second.
    pub rate: f64,
    /// Every n-th accepted order is cancelled by its customer at once.
    pub cancel_every: usize,
    /// Checkouts in flight at most; beyond it a tick is skipped (a stalled service must not
    /// pile up thousands of waiting requests).
    pub max_in_flight: usize,
}

impl Default for LoadSettings {
    fn default() -> Self {
        Self {
            // BAZAAR_CHAOS_RATE: checkouts per second (10 unless told).
            rate: std::env::var("BAZAAR_CHAOS_RATE")
                .ok()
                .and_then(|rate| rate.parse().ok())
                .filter(|rate: &f64| *rate > 0.0)
                .unwrap_or(10.0),
            cancel_every: 12,
            max_in_flight: 64,
        }
    }
}

/// What the load saw.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Order ids answered 202, in order of acceptance.
    pub accepted: Vec<String>,
    /// Checkouts not accepted, by what happened (`503`, `unreachable`, `timeout`, …).
    pub refused: BTreeMap<String, usize>,
    /// Ticks skipped because too many checkouts were in flight.
    pub skipped: usize,
    pub cancels: usize,
    /// When the first and last 202 arrived, relative to the start of the load.
    pub first_accept: Option<Duration>,
    pub last_accept: Option<Duration>,
    /// The slowest checkout answer (202 or not), and when it was sent.
    pub slowest_checkout: Duration,
    pub slowest_checkout_at: Option<Duration>,
    /// Cancellations that got anything but 200 or 409 (an order no longer pending).
    pub cancel_errors: BTreeMap<String, usize>,
}

impl Tally {
    pub fn refused_total(&self) -> usize {
        self.refused.values().sum()
    }

    /// Every answer a client would call an error: refused checkouts and failed cancellations.
    pub fn client_errors(&self) -> usize {
        self.refused_total() + self.cancel_errors.values().sum::<usize>()
    }
}

/// A running load; [`Load::stop`] ends it and returns the tally.
#[derive(Debug)]
pub struct Load {
    stop: CancellationToken,
    tally: Arc<Mutex<Tally>>,
    task: tokio::task::JoinHandle<()>,
}

/// A checkout's shape from its sequence number: deterministic, so runs are comparable.
fn shape(n: usize) -> Vec<(&'static str, i64)> {
    match n % 10 {
        // One in ten asks for a scarce SKU.
        0 => vec![(SCARCE_SKUS[n / 10 % SCARCE_SKUS.len()].0, 1)],
        // Two lines, so reservations cover several stock rows.
        1 | 5 => vec![
            (COMMON_SKUS[n % COMMON_SKUS.len()].0, 1),
            (COMMON_SKUS[(n + 1) % COMMON_SKUS.len()].0, 2),
        ],
        _ => vec![(COMMON_SKUS[n % COMMON_SKUS.len()].0, 1 + (n % 3) as i64)],
    }
}

enum Attempt {
    Accepted(String),
    Refused(String),
}

async fn checkout(
    http: &reqwest::Client,
    order_url: &str,
    customer: &Customer,
    n: usize,
) -> Attempt {
    let items: Vec<Value> = shape(n)
        .into_iter()
        .map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity}))
        .collect();
    let body = json!({
        "items": items,
        "payment_token": customer.payment_token,
        "shipping_address": format!("{n} Chaos Street, Springfield"),
    });
    // As the storefront does: a key per checkout attempt, so a lost answer could be retried
    // without a second order (and the gateway may send it to another instance).
    let answer = http
        .post(format!("{order_url}/orders"))
        .bearer_auth(&customer.token)
        .header("idempotency-key", uuid::Uuid::now_v7().to_string())
        .json(&body)
        .send()
        .await;
    match answer {
        Ok(answer) if answer.status().as_u16() == 202 => {
            match answer
                .json::<Value>()
                .await
                .ok()
                .and_then(|body| body["id"].as_str().map(str::to_owned))
            {
                Some(id) => Attempt::Accepted(id),
                None => Attempt::Refused("202 without an id".into()),
            }
        }
        Ok(answer) => Attempt::Refused(answer.status().as_u16().to_string()),
        Err(error) if error.is_timeout() => Attempt::Refused("timeout".into()),
        Err(error) if error.is_connect() => Attempt::Refused("unreachable".into()),
        Err(_) => Attempt::Refused("connection lost".into()),
    }
}

impl Load {
    pub fn start(order_url: String, customers: Vec<Customer>, settings: LoadSettings) -> Self {
        let stop = CancellationToken::new();
        let tally = Arc::new(Mutex::new(Tally::default()));
        let task = tokio::spawn(run(
            order_url,
            customers,
            settings,
            stop.clone(),
            tally.clone(),
        ));
        Self { stop, tally, task }
    }

    /// What has been accepted so far.
    pub fn accepted_so_far(&self) -> usize {
        self.tally.lock().map_or(0, |tally| tally.accepted.len())
    }

    /// The ids accepted after the first `skip`.
    pub fn accepted_after(&self, skip: usize) -> Vec<String> {
        self.tally
            .lock()
            .map(|tally| tally.accepted.iter().skip(skip).cloned().collect())
            .unwrap_or_default()
    }

    /// Waits until `more` further checkouts have been accepted, or `within` has passed; returns
    /// how many were.
    pub async fn wait_for_accepted(&self, more: usize, within: Duration) -> usize {
        let start = self.accepted_so_far();
        let deadline = Instant::now() + within;
        while self.accepted_so_far() < start + more && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.accepted_so_far() - start
    }

    /// Stops starting checkouts, waits for those in flight, and returns the tally.
    pub async fn stop(self) -> Tally {
        self.stop.cancel();
        let _ = self.task.await;
        self.tally.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

async fn run(
    order_url: String,
    customers: Vec<Customer>,
    settings: LoadSettings,
    stop: CancellationToken,
    tally: Arc<Mutex<Tally>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / settings.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut in_flight = JoinSet::new();
    let mut n = 0_usize;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        while in_flight.try_join_next().is_some() {}
        if in_flight.len() >= settings.max_in_flight {
            if let Ok(mut tally) = tally.lock() {
                tally.skipped += 1;
            }
            continue;
        }
        let customer = customers[n % customers.len()].clone();
        let (http, order_url, tally) = (http.clone(), order_url.clone(), tally.clone());
        let cancel_every = settings.cancel_every;
        let number = n;
        in_flight.spawn(async move {
            let sent_at = started.elapsed();
            let asked = Instant::now();
            let attempt = checkout(&http, &order_url, &customer, number).await;
            let took = asked.elapsed();
            if let Ok(mut tally) = tally.lock()
                && took > tally.slowest_checkout
            {
                tally.slowest_checkout = took;
                tally.slowest_checkout_at = Some(sent_at);
            }
            let cancel = match attempt {
                Attempt::Accepted(id) => {
                    let Ok(mut tally) = tally.lock() else { return };
                    tally.accepted.push(id.clone());
                    let at = started.elapsed();
                    tally.first_accept.get_or_insert(at);
                    tally.last_accept = Some(at);
                    (cancel_every > 0 && tally.accepted.len() % cancel_every == 0).then_some(id)
                }
                Attempt::Refused(why) => {
                    if let Ok(mut tally) = tally.lock() {
                        *tally.refused.entry(why).or_default() += 1;
                    }
                    None
                }
            };
            if let Some(id) = cancel {
                // Whether it is still pending decides the answer (200 or 409); both are fine.
                let answer = http
                    .post(format!("{order_url}/orders/{id}/cancel"))
                    .bearer_auth(&customer.token)
                    .send()
                    .await;
                let error = match answer {
                    Ok(answer) if matches!(answer.status().as_u16(), 200 | 409) => None,
                    Ok(answer) => Some(answer.status().as_u16().to_string()),
                    Err(error) if error.is_timeout() => Some("timeout".into()),
                    Err(error) if error.is_connect() => Some("unreachable".into()),
                    Err(_) => Some("connection lost".into()),
                };
                if let Ok(mut tally) = tally.lock() {
                    tally.cancels += 1;
                    if let Some(error) = error {
                        *tally.cancel_errors.entry(error).or_default() += 1;
                    }
                }
            }
        });
        n += 1;
    }
    while in_flight.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_checkout_in_ten_asks_for_a_scarce_sku_and_some_have_two_lines() {
        let shapes: Vec<_> = (0..20).map(shape).collect();
        let scarce = shapes
            .iter()
            .filter(|lines| SCARCE_SKUS.iter().any(|(sku, _, _)| lines[0].0 == *sku))
            .count();
        assert_eq!(scarce, 2);
        assert_eq!(shapes.iter().filter(|lines| lines.len() == 2).count(), 4);
        assert!(shapes.iter().flatten().all(|(_, quantity)| *quantity >= 1));
    }
}
