//! The gateway in front of several instances of a service: requests are spread over them, a
//! dead instance is skipped without the client noticing, a draining one is left out, and a
//! request that may have reached an instance is never sent to a second one unless it is safe to
//! repeat. Each test starts its own stand-in instances and gateway on free ports.

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

mod support;
use support::{Gateway, read_request};

/// A stand-in instance speaking just enough HTTP/1.1: it answers `/healthz` and `/readyz` with
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
        while let Some(head) = read_request(&mut socket, &mut buffer).await {
            let line = head.lines().next().unwrap_or_default().to_owned();
            let (status, body) =
                if line.starts_with("get /healthz") || line.starts_with("get /readyz") {
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

/// A port nothing listens on: connections to it are refused.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}", listener.local_addr().expect("address"))
}

/// A gateway whose every service is `urls`, checking health every 100 ms.
fn spawn_gateway(urls: &[String]) -> Gateway {
    Gateway::spawn(|config| {
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
        upstreams.health_interval_ms = 100;
    })
}

/// `GET /api/products`: the status and the instance that answered.
async fn products(gateway: &Gateway) -> (StatusCode, String) {
    let answer = gateway.get("/api/products").await;
    let status = answer.status();
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    (status, body["instance"].as_str().unwrap_or("").to_owned())
}

#[tokio::test]
async fn requests_are_spread_over_the_instances_and_a_dead_one_is_skipped_unnoticed() {
    let a = Instance::start("a").await;
    let b = Instance::start("b").await;
    let gateway = spawn_gateway(&[a.url.clone(), dead_url(), b.url.clone()]);

    let mut answered_by = Vec::new();
    for _ in 0..12 {
        let (status, instance) = products(&gateway).await;
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
    assert_eq!(gateway.get("/readyz").await.status(), StatusCode::OK);
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
        assert_eq!(products(&gateway).await, (StatusCode::OK, "b".to_owned()));
    }
    a.health_status.store(200, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if products(&gateway).await.1 == "a" {
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
    assert_eq!(products(&gateway).await.0, StatusCode::OK);
    assert_eq!(
        gateway.get("/readyz").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
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
        assert_eq!(products(&gateway).await.0, StatusCode::OK);
    }
}
