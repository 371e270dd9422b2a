//! What the gateway's tests share: reading requests in a stand-in upstream, and a gateway on a
//! free port with the calls the tests make through it.

use reqwest::StatusCode;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Reads one request (head and `content-length` body) and returns its head, lowercased, or
/// `None` when the client closed the connection.
pub async fn read_request(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
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
    Some(head)
}

/// A gateway started in the test's runtime.
pub struct Gateway {
    pub url: String,
    pub http: reqwest::Client,
}

impl Gateway {
    /// Starts a gateway on a free port with the defaults, changed by `configure`.
    pub fn spawn(configure: impl FnOnce(&mut gateway::config::Config)) -> Self {
        let mut config = gateway::config::Config::defaults();
        config.http.port = 0;
        configure(&mut config);
        let gateway = gateway::startup::build(config).expect("the gateway starts");
        tokio::spawn(gateway.server);
        Self {
            url: format!("http://127.0.0.1:{}", gateway.port),
            http: reqwest::Client::new(),
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("the gateway answers")
    }

    /// `POST /api/auth/login`: not safe to repeat unless it carries an `Idempotency-Key`.
    pub async fn login(&self, idempotency_key: Option<&str>) -> StatusCode {
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
}
