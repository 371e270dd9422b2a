//! The gateway in front of several instances of a service: requests are spread over them, a
//! dead instance is skipped without the client noticing, a draining one is left out, and a
//! request that may have reached an instance is never sent to a second one unless it is safe to
//! repeat. Each test starts its own stand-in instances and gateway on free ports.

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A stand-in instance speaking just enough HTTP/1.1: it answers `/healthz` with
/// `health_status` and anything else with 200 naming itself, or, while `swallow` is set, reads a
/// request and closes the connection without answering.
#[derive(Debug, Clone)]
struct Instance {
    name: &'static str,
    url: String,
    health_status: Arc<AtomicU16>,
    swallow: Arc<AtomicBool>,
    /// Request lines of the requests that reached it (health checks excluded).
    seen: Arc<Mutex<Vec<String>>>,
}

impl Instance {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let instance = Self {
            name,
            url: format!("http://{}", listener.local_addr().expect("address")),
            health_status: Arc::new(AtomicU16::new(200)),
            swallow: Arc::default(),
            seen: Arc::default(),
        };
        let serving = instance.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serving.clone().connection(socket));
            }
        });
        instance
    }

    async fn connection(self, mut socket: TcpStream) {
        let mut buffer = Vec::new();
        while let Some(line) = read_request(&mut socket, &mut buffer).await {
            let (status, body) = if line.starts_with("get /healthz") {
                (self.health_status.load(Ordering::SeqCst), "{}".to_owned())
            } else {
                self.seen.lock().expect("lock").push(line);
                if self.swallow.load(Ordering::SeqCst) {
                    return;
                }
                (200, format!(r#"{{"instance":"{}"}}"#, self.name))
            };
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if socket.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

/// Reads one request (head and `content-length` body); returns its request line, lowercased.
async fn read_request(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0_u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let body_length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + body_length {
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    buffer.drain(..head_end + body_length);
    head.lines().next().map(str::to_owned)
}

/// A port nothing listens on: connections to it are refused.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}", listener.local_addr().expect("address"))
}

struct Gateway {
    url: String,
    http: reqwest::Client,
}

/// A gateway whose every service is `urls`, checking health every 100 ms.
fn spawn_gateway(urls: &[String]) -> Gateway {
    let mut config = gateway::config::Config::defaults();
    config.http.port = 0;
    let upstreams = &mut config.upstreams;
    for service in [
        &mut upstreams.auth,
        &mut upstreams.product,
        &mut upstreams.order,
        &mut upstreams.inventory,
        &mut upstreams.payment,
        &mut upstreams.notification,
        &mut upstreams.shipping,
    ] {
        *service = urls.join(",");
    }
    config.upstreams.health_interval_ms = 100;
    let gateway = gateway::startup::build(config).expect("the gateway starts");
    tokio::spawn(gateway.server);
    Gateway {
        url: format!("http://127.0.0.1:{}", gateway.port),
        http: reqwest::Client::new(),
    }
}

impl Gateway {
    /// `GET /api/products`: the status and the instance that answered.
    async fn products(&self) -> (StatusCode, String) {
        let answer = self
            .http
            .get(format!("{}/api/products", self.url))
            .send()
            .await
            .expect("the gateway answers");
        let status = answer.status();
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        (status, body["instance"].as_str().unwrap_or("").to_owned())
    }

    /// `POST /api/auth/login`, not safe to repeat unless it has a key.
    async fn login(&self, idempotency_key: Option<&str>) -> StatusCode {
        let mut request = self
            .http
            .post(format!("{}/api/auth/login", self.url))
            .header("content-type", "application/json")
            .body(r#"{"email":"ada@example.com","password":"correct horse battery"}"#);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.expect("the gateway answers").status()
    }

    async fn ready(&self) -> StatusCode {
        self.http
            .get(format!("{}/readyz", self.url))
            .send()
            .await
            .expect("the gateway answers")
            .status()
    }
}

#[tokio::test]
async fn requests_are_spread_over_the_instances_and_a_dead_one_is_skipped_unnoticed() {
    let a = Instance::start("a").await;
    let b = Instance::start("b").await;
    let gateway = spawn_gateway(&[a.url.clone(), dead_url(), b.url.clone()]);

    let mut answered_by = Vec::new();
    for _ in 0..12 {
        let (status, instance) = gateway.products().await;
        assert_eq!(
            status,
            StatusCode::OK,
            "a refused connection never reaches the client"
        );
        answered_by.push(instance);
    }
    let by_a = answered_by.iter().filter(|name| *name == "a").count();
    assert!(
        (4..=8).contains(&by_a),
        "both instances take their share: {answered_by:?}"
    );
    // A request that is not safe to repeat goes elsewhere too: the refused one never reached
    // anybody.
    for _ in 0..6 {
        assert_eq!(gateway.login(None).await, StatusCode::OK);
    }
    let logins = |instance: &Instance| {
        instance
            .seen()
            .iter()
            .filter(|line| line.starts_with("post /auth/login"))
            .count()
    };
    assert_eq!(
        logins(&a) + logins(&b),
        6,
        "each login reached one instance once"
    );
    assert_eq!(gateway.ready().await, StatusCode::OK);
}

#[tokio::test]
async fn a_draining_instance_is_left_out_until_it_is_healthy_again() {
    let a = Instance::start("a").await;
    let b = Instance::start("b").await;
    let gateway = spawn_gateway(&[a.url.clone(), b.url.clone()]);
    a.health_status.store(503, Ordering::SeqCst);
    // Health checks run every 100 ms.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..8 {
        assert_eq!(gateway.products().await, (StatusCode::OK, "b".to_owned()));
    }
    a.health_status.store(200, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if gateway.products().await.1 == "a" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a never came back into the rotation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every instance unhealthy: the gateway still tries them rather than refuse on its own.
    a.health_status.store(503, Ordering::SeqCst);
    b.health_status.store(503, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(gateway.products().await.0, StatusCode::OK);
    assert_eq!(gateway.ready().await, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_request_that_may_have_reached_an_instance_goes_to_another_only_if_safe_to_repeat() {
    let a = Instance::start("a").await;
    let b = Instance::start("b").await;
    a.swallow.store(true, Ordering::SeqCst);
    b.swallow.store(true, Ordering::SeqCst);
    let gateway = spawn_gateway(&[a.url.clone(), b.url.clone()]);

    // Both close without an answer: the safe request is tried on each, the unsafe one on one.
    assert_eq!(
        gateway.login(Some("login-1")).await,
        StatusCode::BAD_GATEWAY
    );
    let tried = a.seen().len() + b.seen().len();
    assert_eq!(tried, 2, "with a key, one attempt per instance");
    assert_eq!(gateway.login(None).await, StatusCode::BAD_GATEWAY);
    assert_eq!(
        a.seen().len() + b.seen().len(),
        tried + 1,
        "without a key, never a second instance"
    );

    // One instance closes without answering, the other answers: safe requests always succeed.
    b.swallow.store(false, Ordering::SeqCst);
    for i in 0..4 {
        assert_eq!(
            gateway.login(Some(&format!("login-{i}"))).await,
            StatusCode::OK
        );
        assert_eq!(gateway.products().await.0, StatusCode::OK);
    }
}
