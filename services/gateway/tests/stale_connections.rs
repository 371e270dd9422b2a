//! The gateway against an upstream that closes idle keep-alive connections (issue 17: random
//! 502s on a quiet shop). Each test starts its own upstream and gateway on free ports.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

mod support;
use support::{Gateway, read_request};

/// How long the upstream keeps an idle connection.
const UPSTREAM_KEEP_ALIVE: Duration = Duration::from_secs(1);
/// Longer than the upstream's keep-alive.
const IDLE_PAUSE: Duration = Duration::from_millis(1_500);

/// A stand-in upstream speaking just enough HTTP/1.1. It keeps a connection for
/// `UPSTREAM_KEEP_ALIVE` after each answer; a request that arrives on a connection idle for
/// longer is read and the connection closed without an answer.
///
/// That is what a client sees when its request crosses the server's close on the wire, made
/// deterministic. A real server closes at its deadline, and a client that reuses the connection
/// after hyper has noticed the close is unharmed, so with actix the failure needs the request to
/// be written within a fraction of a millisecond of the close: the race CI hit at random.
#[derive(Debug, Clone)]
struct Upstream {
    url: String,
    /// The request line and headers of every request answered.
    answered: Arc<Mutex<Vec<String>>>,
    /// Requests that arrived on an expired connection, which was closed instead.
    closed_unanswered: Arc<AtomicUsize>,
}

impl Upstream {
    /// `answer_delay` keeps each request busy for a while, so that concurrent requests need
    /// connections of their own.
    async fn start(answer_delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream = Self {
            url: format!("http://{}", listener.local_addr().expect("address")),
            answered: Arc::default(),
            closed_unanswered: Arc::default(),
        };
        let serving = upstream.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serving.clone().connection(socket, answer_delay));
            }
        });
        upstream
    }

    async fn connection(self, mut socket: TcpStream, answer_delay: Duration) {
        let mut idle_since = Instant::now();
        let mut buffer = Vec::new();
        loop {
            let Some(head) = read_request(&mut socket, &mut buffer).await else {
                return;
            };
            if idle_since.elapsed() > UPSTREAM_KEEP_ALIVE {
                self.closed_unanswered.fetch_add(1, Ordering::SeqCst);
                return;
            }
            tokio::time::sleep(answer_delay).await;
            let body = br#"{"ok":true}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let sent = socket.write_all(answer.as_bytes()).await.is_ok()
                && socket.write_all(body).await.is_ok();
            if !sent {
                return;
            }
            self.answered.lock().expect("lock").push(head);
            idle_since = Instant::now();
        }
    }

    /// What was answered, without the gateway's health checks.
    fn answered(&self) -> Vec<String> {
        self.answered
            .lock()
            .expect("lock")
            .iter()
            .filter(|head| !head.starts_with("get /healthz"))
            .cloned()
            .collect()
    }
}

/// A gateway whose product and auth routes go to `upstream`.
fn spawn_gateway(upstream: &Upstream, pool_idle_timeout: Duration) -> Gateway {
    Gateway::spawn(|config| {
        config.upstreams.product = upstream.url.clone();
        config.upstreams.auth = upstream.url.clone();
        config.upstreams.pool_idle_timeout_ms =
            u64::try_from(pool_idle_timeout.as_millis()).expect("a short timeout");
    })
}

async fn products(gateway: &Gateway) -> StatusCode {
    gateway.get("/api/products").await.status()
}

#[tokio::test]
async fn requests_after_an_idle_pause_longer_than_the_upstream_keep_alive_all_succeed() {
    let upstream = Upstream::start(Duration::ZERO).await;
    // As deployed: the gateway gives idle connections up well before the upstream does.
    let gateway = spawn_gateway(&upstream, Duration::from_millis(300));
    assert_eq!(products(&gateway).await, StatusCode::OK);

    // The point of the test: every connection the gateway used is now past the upstream's
    // keep-alive.
    tokio::time::sleep(IDLE_PAUSE).await;

    for _ in 0..3 {
        assert_eq!(products(&gateway).await, StatusCode::OK);
    }
    assert_eq!(gateway.login(None).await, StatusCode::OK);
    assert_eq!(gateway.login(Some("login-1")).await, StatusCode::OK);
    assert_eq!(
        upstream.closed_unanswered.load(Ordering::SeqCst),
        0,
        "the gateway wrote into a connection the upstream had given up"
    );
    assert_eq!(upstream.answered().len(), 6);
}

#[tokio::test]
async fn a_safe_request_whose_connection_the_upstream_closed_is_sent_again_on_a_new_one() {
    // Requests overlap for a while, so the gateway opens a connection for each.
    let upstream = Upstream::start(Duration::from_millis(100)).await;
    // The gateway keeps idle connections longer than this upstream does, as it would with an
    // upstream that restarted or was configured with a shorter keep-alive.
    let gateway = spawn_gateway(&upstream, Duration::from_secs(60));
    let warm_up = futures::future::join_all((0..3).map(|_| products(&gateway))).await;
    assert_eq!(warm_up, [StatusCode::OK; 3]);

    // The point of the test: the three pooled connections are now past the upstream's
    // keep-alive, and each request below meets one of them.
    tokio::time::sleep(IDLE_PAUSE).await;

    assert_eq!(products(&gateway).await, StatusCode::OK);
    assert_eq!(gateway.login(Some("login-1")).await, StatusCode::OK);
    // Without an Idempotency-Key the upstream may have acted on it, so it is not sent again.
    assert_eq!(gateway.login(None).await, StatusCode::BAD_GATEWAY);

    assert_eq!(upstream.closed_unanswered.load(Ordering::SeqCst), 3);
    let answered = upstream.answered();
    assert_eq!(answered.len(), 5, "{answered:#?}");
    let logins: Vec<&String> = answered
        .iter()
        .filter(|head| head.starts_with("post /auth/login"))
        .collect();
    assert_eq!(logins.len(), 1, "{answered:#?}");
    assert!(logins[0].contains("idempotency-key: login-1"));
}
