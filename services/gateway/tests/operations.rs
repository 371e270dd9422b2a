//! The gateway's operational endpoints (issue 13, part 8): `/readyz` asks every upstream's own
//! `/readyz`, all at once and each within a bound, and names each upstream in its answer;
//! `/healthz` stays cheap; `/metrics` is Prometheus text. The upstreams are real servers on
//! free ports, built with the services' own `platform::http::serve`, whose one readiness check
//! the test switches between ready, not ready and hanging.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use platform::http::{Readiness, ReadinessCheck};
use reqwest::StatusCode;

// Shared with the other gateway tests; this one needs only the gateway itself.
#[allow(dead_code)]
mod support;
use support::Gateway;

const READY: u8 = 0;
const NOT_READY: u8 = 1;
const HANGING: u8 = 2;

/// The services the gateway knows, as its configuration names them.
const SERVICES: [&str; 7] = [
    "auth",
    "product",
    "order",
    "inventory",
    "payment",
    "notification",
    "shipping",
];

/// One upstream: a platform server whose readiness the test sets.
#[derive(Debug, Clone)]
struct Upstream {
    url: String,
    state: Arc<AtomicU8>,
    /// How often its readiness was asked.
    asked: Arc<AtomicUsize>,
}

impl Upstream {
    fn start() -> Self {
        let state = Arc::new(AtomicU8::new(READY));
        let asked = Arc::new(AtomicUsize::new(0));
        let check = {
            let state = state.clone();
            let asked = asked.clone();
            ReadinessCheck::new("database", move || {
                asked.fetch_add(1, Ordering::SeqCst);
                let state = state.load(Ordering::SeqCst);
                Box::pin(async move {
                    match state {
                        READY => Ok(()),
                        NOT_READY => Err("the database is down".to_owned()),
                        _ => std::future::pending().await,
                    }
                })
            })
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let server = platform::http::serve(
            listener,
            Duration::from_secs(15),
            Readiness::default().with(check),
            |_| {},
        )
        .expect("the upstream starts");
        tokio::spawn(server);
        Self { url, state, asked }
    }

    fn set(&self, state: u8) {
        self.state.store(state, Ordering::SeqCst);
    }
}

/// Seven upstreams and a gateway in front of them, each upstream's readiness waited for at most
/// `ready_timeout_ms`.
fn stack(ready_timeout_ms: u64) -> (Vec<(&'static str, Upstream)>, Gateway) {
    let upstreams: Vec<_> = SERVICES
        .iter()
        .map(|&name| (name, Upstream::start()))
        .collect();
    let url = |name: &str| upstream(&upstreams, name).url.clone();
    let gateway = Gateway::spawn(|config| {
        let configured = &mut config.upstreams;
        configured.auth = url("auth");
        configured.product = url("product");
        configured.order = url("order");
        configured.inventory = url("inventory");
        configured.payment = url("payment");
        configured.notification = url("notification");
        configured.shipping = url("shipping");
        configured.ready_timeout_ms = ready_timeout_ms;
        configured.health_interval_ms = 100;
    });
    (upstreams, gateway)
}

async fn readyz(gateway: &Gateway) -> (StatusCode, serde_json::Value) {
    let answer = gateway.get("/readyz").await;
    let status = answer.status();
    (status, answer.json().await.expect("a JSON answer"))
}

fn upstream<'a>(upstreams: &'a [(&str, Upstream)], name: &str) -> &'a Upstream {
    &upstreams
        .iter()
        .find(|(service, _)| *service == name)
        .expect("known service")
        .1
}

#[tokio::test]
async fn readyz_reports_each_upstream_and_fails_while_any_is_not_ready() {
    let (upstreams, gateway) = stack(1_000);

    let (status, body) = readyz(&gateway).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    for service in SERVICES {
        assert_eq!(body["checks"][service], "ok", "{service}: {body}");
    }

    // Alive but not ready (its database is down): the gateway is not ready, and says which.
    upstream(&upstreams, "order").set(NOT_READY);
    let (status, body) = readyz(&gateway).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["order"], "unavailable", "{body}");
    for service in SERVICES.iter().filter(|&&service| service != "order") {
        assert_eq!(body["checks"][service], "ok", "{service}: {body}");
    }
    // The upstream's own reason is logged, never shown.
    assert!(!body.to_string().contains("database"), "{body}");

    // Payment is never forwarded to, but the gateway's readiness covers it too.
    upstream(&upstreams, "order").set(READY);
    upstream(&upstreams, "payment").set(NOT_READY);
    let (status, body) = readyz(&gateway).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["payment"], "unavailable", "{body}");

    upstream(&upstreams, "payment").set(READY);
    assert_eq!(readyz(&gateway).await.0, StatusCode::OK);
}

#[tokio::test]
async fn upstreams_that_hang_are_asked_at_once_and_each_given_up_after_its_bound() {
    let ready_timeout = Duration::from_millis(700);
    let (upstreams, gateway) = stack(700);
    for (_, upstream) in &upstreams {
        upstream.set(HANGING);
    }

    let started = Instant::now();
    let (status, body) = readyz(&gateway).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    for service in SERVICES {
        assert_eq!(body["checks"][service], "unavailable", "{service}: {body}");
    }
    // Asked one after another, seven hanging upstreams would take 4.9 s.
    assert!(
        took >= ready_timeout && took < ready_timeout * 4,
        "answered after {took:?}"
    );
}

#[tokio::test]
async fn healthz_stays_cheap_and_asks_no_upstream() {
    let (upstreams, gateway) = stack(1_000);
    for (_, upstream) in &upstreams {
        upstream.set(HANGING);
    }
    let asked_before: usize = upstreams
        .iter()
        .map(|(_, upstream)| upstream.asked.load(Ordering::SeqCst))
        .sum();

    let started = Instant::now();
    let answer = gateway.get("/healthz").await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_millis(500));
    let asked_after: usize = upstreams
        .iter()
        .map(|(_, upstream)| upstream.asked.load(Ordering::SeqCst))
        .sum();
    assert_eq!(
        asked_after, asked_before,
        "no upstream's readiness was asked"
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_each_watched_instance_health() {
    let (upstreams, gateway) = stack(1_000);
    let order_url = upstream(&upstreams, "order").url.clone();
    let order_instance_healthy = |line: &&str| {
        line.starts_with("gateway_upstream_instance_healthy{")
            && line.contains("service=\"order\"")
            && line.contains(&format!("instance=\"{order_url}\""))
            && line.ends_with(" 1")
    };

    // Health checks run every 100 ms; the first one sets the gauge.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = gateway.get("/metrics").await;
        assert_eq!(answer.status(), StatusCode::OK);
        let content_type = answer
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        let text = answer.text().await.expect("a body");
        if text.lines().any(|line| order_instance_healthy(&line)) {
            assert!(text.contains("http_responses_total"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no healthy order instance within 10 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
