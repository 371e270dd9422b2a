//! Customers going through the gateway: accounts, an open-loop checkout load, and the order's
//! event stream read the way the storefront reads it (`services/gateway/static/app.js`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use uuid::Uuid;

/// The public API, on the gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub base: String,
    pub http: Client,
}

/// A logged-in customer.
#[derive(Debug, Clone)]
pub struct Customer {
    pub access_token: String,
    pub refresh_token: String,
    pub since: Instant,
}

/// The error code of the API's error shape `{"error": {"code": …}}`, or the status alone.
fn describe(status: StatusCode, body: &str) -> String {
    let code = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    match code {
        Some(code) => format!("HTTP {} {code}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

fn kind_of(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection refused or reset"
    } else if error.is_body() || error.is_decode() {
        "broken response body"
    } else {
        "request failed"
    }
}

impl Gateway {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = Client::builder()
            .pool_max_idle_per_host(4096)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30))
            .json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Waits until the gateway answers `/readyz`.
    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let ready = self
                .http
                .get(format!("{}/readyz", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the gateway at {} did not answer /readyz within {} s (start the stack with \
                 `scripts/run.sh --release --detach`, or let `make bench` start it)",
                self.base,
                within.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Registers (unless `register` is false) and logs in an account.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        register: bool,
    ) -> anyhow::Result<Customer> {
        if register {
            let (status, body) = self
                .post_json(
                    "/api/auth/register",
                    None,
                    &json!({"email": email, "password": password, "name": "Bench customer"}),
                )
                .await?;
            anyhow::ensure!(
                status == StatusCode::CREATED,
                "register {email}: {status} {body}"
            );
        }
        let (status, body) = self
            .post_json(
                "/api/auth/login",
                None,
                &json!({"email": email, "password": password}),
            )
            .await?;
        anyhow::ensure!(
            status == StatusCode::OK,
            "login {email}: {status} {body} (the auth service allows 50 logins per client address \
             per 15 minutes; wait, or use fewer --customers)"
        );
        Ok(Customer {
            access_token: body["access_token"].as_str().unwrap_or_default().to_owned(),
            refresh_token: body["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            since: Instant::now(),
        })
    }

    /// A fresh access token (they live 15 minutes) from the refresh token.
    pub async fn refresh(&self, customer: &Customer) -> anyhow::Result<Customer> {
        let (status, body) = self
            .post_json(
                "/api/auth/refresh",
                None,
                &json!({"refresh_token": customer.refresh_token}),
            )
            .await?;
        anyhow::ensure!(status == StatusCode::OK, "refresh: {status} {body}");
        Ok(Customer {
            access_token: body["access_token"].as_str().unwrap_or_default().to_owned(),
            refresh_token: body["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            since: Instant::now(),
        })
    }

    /// Sets a SKU's stock through the admin API.
    pub async fn set_stock(&self, admin: &Customer, sku: &str, on_hand: i64) -> anyhow::Result<()> {
        let response = self
            .http
            .put(format!("{}/api/admin/inventory/{sku}", self.base))
            .bearer_auth(&admin.access_token)
            .timeout(Duration::from_secs(30))
            .json(&json!({"on_hand": on_hand}))
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        anyhow::ensure!(status.is_success(), "set stock of {sku}: {status} {body}");
        Ok(())
    }
}

/// What one customer's checkout came to.
#[derive(Debug, Default)]
pub struct Flow {
    /// Late by this much against its schedule.
    pub late: Duration,
    pub sent_at: Option<SystemTime>,
    pub accepted: Option<Duration>,
    pub order: Option<Uuid>,
    pub error: Option<String>,
    pub watched: bool,
    pub paid_on_stream: Option<Duration>,
    pub shipped_on_stream: Option<Duration>,
    pub stream_error: Option<String>,
}

/// The shape of one open-loop run.
#[derive(Debug, Clone)]
pub struct LoadShape {
    pub rate: f64,
    pub duration: Duration,
    /// Share of checkouts whose customer then follows the order's event stream.
    pub watch_share: f64,
    pub skus: Vec<String>,
    pub stream_timeout: Duration,
}

/// A run in flight: its flows keep going after the last checkout was sent.
#[derive(Debug)]
pub struct Running {
    pub started: Instant,
    pub started_at: SystemTime,
    pub scheduled: usize,
    pub flows: JoinSet<Flow>,
}

/// Sends checkouts on schedule (`rate` per second for `duration`) whatever the responses, each
/// in its own task; returns once the last one was sent. A send more than 10 ms behind its
/// schedule counts as late (the load generator itself could not keep up).
pub async fn open_loop(
    gateway: &Gateway,
    customers: &Arc<Vec<Customer>>,
    shape: &LoadShape,
) -> Running {
    let total = (shape.rate * shape.duration.as_secs_f64()).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / shape.rate);
    let started = Instant::now();
    let started_at = SystemTime::now();
    let mut flows = JoinSet::new();
    // Watch every k-th checkout, spread evenly: share 0.5 watches every other one.
    let mut watch_credit = 0.0;
    for n in 0..total {
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let late = Instant::now().saturating_duration_since(due);
        watch_credit += shape.watch_share;
        let watched = watch_credit >= 1.0;
        if watched {
            watch_credit -= 1.0;
        }
        let gateway = gateway.clone();
        let customer = customers[n % customers.len()].clone();
        let sku = shape.skus[n % shape.skus.len()].clone();
        let stream_timeout = shape.stream_timeout;
        flows.spawn(async move {
            let mut flow = Flow {
                late,
                watched,
                ..Flow::default()
            };
            checkout(&gateway, &customer, &sku, &mut flow).await;
            if watched && flow.order.is_some() {
                let started = Instant::now();
                match tokio::time::timeout(stream_timeout, follow(&gateway, &customer, &mut flow))
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => flow.stream_error = Some(error),
                    Err(_) => {
                        flow.stream_error = Some(format!(
                            "stream: no final status within {} s",
                            started.elapsed().as_secs()
                        ));
                    }
                }
            }
            flow
        });
    }
    Running {
        started,
        started_at,
        scheduled: total,
        flows,
    }
}

async fn checkout(gateway: &Gateway, customer: &Customer, sku: &str, flow: &mut Flow) {
    let key = Uuid::now_v7().to_string();
    let sent = Instant::now();
    flow.sent_at = Some(SystemTime::now());
    let result = gateway
        .http
        .post(format!("{}/api/orders", gateway.base))
        .bearer_auth(&customer.access_token)
        .header("Idempotency-Key", key)
        .timeout(Duration::from_secs(30))
        .json(&json!({
            "items": [{"sku": sku, "quantity": 1}],
            "payment_token": "tok_visa",
            "shipping_address": {
                "name": "Bench Customer",
                "line1": "1 Benchmark Street",
                "city": "Testville",
                "postal_code": "12345",
                "country": "DE",
            },
        }))
        .send()
        .await;
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            flow.error = Some(format!("checkout: {}", kind_of(&error)));
            return;
        }
    };
    let status = response.status();
    let body = match response.text().await {
        Ok(body) => body,
        Err(error) => {
            flow.error = Some(format!("checkout: {}", kind_of(&error)));
            return;
        }
    };
    if status != StatusCode::ACCEPTED {
        flow.error = Some(format!("checkout: {}", describe(status, &body)));
        return;
    }
    flow.accepted = Some(sent.elapsed());
    let id = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["id"].as_str().and_then(|id| Uuid::parse_str(id).ok()));
    match id {
        Some(id) => flow.order = Some(id),
        None => flow.error = Some("checkout: 202 without an order id".into()),
    }
}

/// Reads `GET /api/orders/{id}/events` (`event: status`, `data: {"status": …}`) until a final
/// status, noting when `paid` and `shipping_scheduled` arrive (from the checkout's send). Like
/// the storefront, reconnects when the stream breaks (up to three times).
async fn follow(gateway: &Gateway, customer: &Customer, flow: &mut Flow) -> Result<(), String> {
    let Some(order) = flow.order else {
        return Ok(());
    };
    let sent = flow.sent_at.unwrap_or_else(SystemTime::now);
    let since_sent = || SystemTime::now().duration_since(sent).unwrap_or_default();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let response = gateway
            .http
            .get(format!("{}/api/orders/{order}/events", gateway.base))
            .bearer_auth(&customer.access_token)
            .header("Accept", "text/event-stream")
            .send()
            .await;
        let mut response = match response {
            Ok(response) if response.status() == StatusCode::OK => response,
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                if status.is_server_error() && attempts < 4 {
                    continue;
                }
                return Err(format!("stream: {}", describe(status, &body)));
            }
            Err(_) if attempts < 4 => continue,
            Err(error) => return Err(format!("stream: {}", kind_of(&error))),
        };
        let mut buffer = String::new();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(_) if attempts < 4 => break,
                Err(error) => return Err(format!("stream: {}", kind_of(&error))),
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let mut event = "message";
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        event = if value.trim() == "status" {
                            "status"
                        } else {
                            "other"
                        };
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if event != "status" {
                    continue;
                }
                let status = serde_json::from_str::<Value>(&data)
                    .ok()
                    .and_then(|v| v["status"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                match status.as_str() {
                    "paid" => {
                        flow.paid_on_stream.get_or_insert_with(since_sent);
                    }
                    "shipping_scheduled" => {
                        flow.paid_on_stream.get_or_insert_with(since_sent);
                        flow.shipped_on_stream.get_or_insert_with(since_sent);
                        return Ok(());
                    }
                    // Counted for every order from the order database, not here.
                    "rejected" | "cancelled" => return Ok(()),
                    _ => {}
                }
            }
        }
        if attempts >= 4 {
            return Err("stream: ended before a final status".into());
        }
    }
}

/// Counts of what went wrong, by kind.
pub fn error_kinds(flows: &[Flow]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for flow in flows {
        if let Some(error) = &flow.error {
            *kinds.entry(error.clone()).or_default() += 1;
        }
        if let Some(error) = &flow.stream_error {
            *kinds.entry(error.clone()).or_default() += 1;
        }
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_come_from_the_api_error_shape() {
        assert_eq!(
            describe(
                StatusCode::CONFLICT,
                r#"{"error":{"code":"conflict","message":"x"}}"#
            ),
            "HTTP 409 conflict"
        );
        assert_eq!(describe(StatusCode::BAD_GATEWAY, "oops"), "HTTP 502");
    }
}
