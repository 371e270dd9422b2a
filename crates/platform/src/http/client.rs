//! Calls from one process to another over HTTP, made so that a kept-alive connection the other
//! side has just closed does not fail a request.
//!
//! A server closes a connection that has been idle longer than its keep-alive (every Bazaar
//! service: `http.keep_alive_ms`). A client that keeps idle connections longer may write its next
//! request into one just as the server closes it, and the request fails before any byte of an
//! answer arrives although the server is fine. [`HttpClient`] guards against it twice:
//!
//! - it gives up an idle connection after `pool_idle_timeout`, which its owner sets below the
//!   keep-alive of the servers it calls, so the client lets go of a connection before the server
//!   does;
//! - a request whose connection closed before any answer is sent once more, on a new
//!   connection, when repeating it is safe ([`is_safe_to_repeat`]). That covers what the idle
//!   timeout cannot: a server that restarted, or closed a connection early.
//!
//! hyper-util already sends again, by itself, a request that a reused connection turned out to
//! be closed for before any of it was written. What is left for [`HttpClient::send`] is a request
//! that was written and then met the end of the connection (or a reset) instead of a response.
//! Neither reqwest nor hyper-util says whether that connection was reused, nor whether the
//! server read the request, which is why only requests that are safe to repeat are repeated.
//!
//! A caller that knows several instances of a service (the gateway) asks
//! [`SendFailure::calls_for_another_instance`] instead, and sends with [`HttpClient::execute`]:
//! a request that could not connect reached nobody and goes to another instance whatever its
//! method; one whose connection closed before any answer goes there only when it is safe to
//! repeat.

use std::error::Error as StdError;
use std::time::Duration;

use reqwest::{Client, ClientBuilder, Method, Request, RequestBuilder, Response};

/// The header by which a caller makes a request safe to repeat: a server that already handled
/// the key answers again with the stored result instead of acting twice.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Why a request got no response, as far as deciding whether to send it again goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailure {
    /// No connection could be made, so nothing reached the server.
    NotConnected,
    /// The connection ended (closed or reset) after the request was written, before a complete
    /// response head: typically a kept-alive connection the server closed as the request
    /// arrived. The server may also have read the request and failed while handling it.
    ClosedBeforeAnswer,
    /// The request, or its connection attempt, ran out of time.
    TimedOut,
    /// Anything else: a request that could not be built, a protocol error, a redirect loop.
    Other,
}

impl SendFailure {
    /// Classifies an error from sending a request (not from reading a response's body). A
    /// connection attempt that ran out of time is `NotConnected`: nothing was sent either.
    pub fn of(error: &reqwest::Error) -> Self {
        if error.is_connect() {
            Self::NotConnected
        } else if error.is_timeout() {
            Self::TimedOut
        } else if error.is_request() && sources(error).any(ended_the_connection) {
            Self::ClosedBeforeAnswer
        } else {
            Self::Other
        }
    }

    /// Whether a request that failed this way goes out once more on a new connection.
    ///
    /// Only a connection that closed before any answer qualifies, and only for a request that is
    /// safe to repeat, since the server may have handled the first one. A failed connection
    /// attempt is not repeated against the same server, which just refused it; once a service
    /// runs as several instances, that is the failure to send to another one, whatever the
    /// method, since nothing reached the first.
    pub fn calls_for_a_repeat(self, safe_to_repeat: bool) -> bool {
        match self {
            Self::ClosedBeforeAnswer => safe_to_repeat,
            Self::NotConnected | Self::TimedOut | Self::Other => false,
        }
    }

    /// Whether a request that failed this way at one instance of a service goes to another.
    ///
    /// A failed connection reached nobody, so any request may go elsewhere, even one that is not
    /// safe to repeat: it has not happened yet. A connection that closed before any answer may
    /// have delivered the request, so only a request that is safe to repeat goes on. A timeout
    /// or anything else is the caller's answer: the instance may still be acting on it.
    pub fn calls_for_another_instance(self, safe_to_repeat: bool) -> bool {
        match self {
            Self::NotConnected => true,
            Self::ClosedBeforeAnswer => safe_to_repeat,
            Self::TimedOut | Self::Other => false,
        }
    }
}

/// A request may be sent twice when a second copy cannot do anything the first did not: a GET or
/// HEAD, or a request that carries an `Idempotency-Key`.
pub fn is_safe_to_repeat(request: &Request) -> bool {
    matches!(*request.method(), Method::GET | Method::HEAD)
        || request.headers().contains_key(IDEMPOTENCY_KEY)
}

/// `error` and its sources, joined with `: `. reqwest's own message is only "error sending
/// request for url (...)"; what went wrong (refused, reset, closed before the answer) is in the
/// sources.
pub fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn sources(error: &reqwest::Error) -> impl Iterator<Item = &(dyn StdError + 'static)> {
    std::iter::successors(error.source(), |&cause| cause.source())
}

/// hyper's "connection closed before message completed", a request canceled because its
/// connection closed before it was written, or the socket's own word for the same.
fn ended_the_connection(cause: &(dyn StdError + 'static)) -> bool {
    if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>() {
        return hyper_error.is_incomplete_message() || hyper_error.is_canceled();
    }
    cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
        )
    })
}

/// A pooled HTTP client whose idle connections expire before the servers close them, and which
/// sends a safe request once more, on a new connection, when its connection closed before any
/// answer. Cheap to clone: clones share the pool.
#[derive(Debug, Clone)]
pub struct HttpClient {
    pooled: Client,
    /// Keeps no idle connection, so every request it sends opens a new one: a repeat must not
    /// land on another pooled connection that the server closed at the same moment.
    unpooled: Client,
}

impl HttpClient {
    /// `configure` sets what every request shares (timeouts, redirects, user agent).
    /// `pool_idle_timeout` must be shorter than the keep-alive of every server this client
    /// calls, so the client drops an idle connection before the server closes it.
    pub fn new(
        pool_idle_timeout: Duration,
        configure: impl Fn(ClientBuilder) -> ClientBuilder,
    ) -> reqwest::Result<Self> {
        Ok(Self {
            pooled: configure(Client::builder())
                .pool_idle_timeout(pool_idle_timeout)
                .build()?,
            unpooled: configure(Client::builder())
                .pool_max_idle_per_host(0)
                .build()?,
        })
    }

    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        self.pooled.request(method, url)
    }

    pub fn get(&self, url: &str) -> RequestBuilder {
        self.pooled.get(url)
    }

    pub fn post(&self, url: &str) -> RequestBuilder {
        self.pooled.post(url)
    }

    /// Sends `request` once, on a pooled connection or, with `fresh_connection`, on a new one
    /// (for a second attempt, which must not meet another pooled connection the server closed).
    /// What to do on failure is the caller's: see [`SendFailure::calls_for_another_instance`].
    pub async fn execute(
        &self,
        request: Request,
        fresh_connection: bool,
    ) -> reqwest::Result<Response> {
        if fresh_connection {
            self.unpooled.execute(request).await
        } else {
            self.pooled.execute(request).await
        }
    }

    /// Sends `request` (built from this client) and returns the response head. When the
    /// connection closed before any answer and the request is safe to repeat, it is sent once
    /// more on a new connection, and that attempt's outcome is the result. A request-level
    /// timeout applies to each attempt.
    pub async fn send(&self, request: RequestBuilder) -> reqwest::Result<Response> {
        let (client, request) = request.build_split();
        let request = request?;
        // A body that cannot be cloned (a stream) cannot be sent twice.
        let copy = is_safe_to_repeat(&request)
            .then(|| request.try_clone())
            .flatten();
        let method = request.method().clone();
        match client.execute(request).await {
            Err(error) => {
                let failure = SendFailure::of(&error);
                match copy {
                    Some(copy) if failure.calls_for_a_repeat(true) => {
                        tracing::info!(
                            %method,
                            url = %copy.url(),
                            error = %error_chain(&error),
                            "the connection closed before any answer; sending the request once \
                             more on a new connection"
                        );
                        self.unpooled.execute(copy).await
                    }
                    _ => Err(error),
                }
            }
            answer => answer,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn request(method: Method, headers: &[(&'static str, &'static str)]) -> Request {
        let mut request = Request::new(method, "http://127.0.0.1:1/".parse().expect("a valid url"));
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(*name, reqwest::header::HeaderValue::from_static(value));
        }
        request
    }

    #[test]
    fn reads_and_requests_with_an_idempotency_key_are_safe_to_repeat() {
        assert!(is_safe_to_repeat(&request(Method::GET, &[])));
        assert!(is_safe_to_repeat(&request(Method::HEAD, &[])));
        assert!(is_safe_to_repeat(&request(
            Method::POST,
            &[("idempotency-key", "order-1")]
        )));
        assert!(!is_safe_to_repeat(&request(Method::POST, &[])));
        assert!(!is_safe_to_repeat(&request(Method::DELETE, &[])));
    }

    #[test]
    fn only_a_connection_closed_before_any_answer_calls_for_a_repeat() {
        assert!(SendFailure::ClosedBeforeAnswer.calls_for_a_repeat(true));
        assert!(!SendFailure::ClosedBeforeAnswer.calls_for_a_repeat(false));
        for failure in [
            SendFailure::NotConnected,
            SendFailure::TimedOut,
            SendFailure::Other,
        ] {
            assert!(!failure.calls_for_a_repeat(true), "{failure:?}");
        }
    }

    #[test]
    fn a_request_that_reached_nobody_goes_to_another_instance_whatever_its_method() {
        assert!(SendFailure::NotConnected.calls_for_another_instance(false));
        assert!(SendFailure::NotConnected.calls_for_another_instance(true));
        assert!(SendFailure::ClosedBeforeAnswer.calls_for_another_instance(true));
        assert!(!SendFailure::ClosedBeforeAnswer.calls_for_another_instance(false));
        for failure in [SendFailure::TimedOut, SendFailure::Other] {
            assert!(!failure.calls_for_another_instance(true), "{failure:?}");
        }
    }

    #[test]
    fn the_chain_names_every_cause() {
        let error = anyhow::Error::new(std::io::Error::new(ErrorKind::BrokenPipe, "broken pipe"))
            .context("sending the request");
        let error: &(dyn StdError + 'static) = error.as_ref();
        assert_eq!(error_chain(error), "sending the request: broken pipe");
    }

    /// A server that reads one request on each connection and closes it without answering;
    /// the count is of the connections it accepted.
    async fn closing_server() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buffer = [0_u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let _ = socket.shutdown().await;
            }
        });
        (format!("http://{address}/"), accepted)
    }

    #[tokio::test]
    async fn failures_are_classified_from_the_error_chain() {
        let client = Client::new();
        let closed = client
            .get(closing_server().await.0)
            .send()
            .await
            .expect_err("no answer");
        assert_eq!(
            SendFailure::of(&closed),
            SendFailure::ClosedBeforeAnswer,
            "{}",
            error_chain(&closed)
        );
        assert!(
            error_chain(&closed).contains("connection closed before message completed"),
            "{}",
            error_chain(&closed)
        );

        // Nothing listens on port 1.
        let refused = client
            .get("http://127.0.0.1:1/")
            .send()
            .await
            .expect_err("refused");
        assert_eq!(SendFailure::of(&refused), SendFailure::NotConnected);

        // A connection attempt that times out sent nothing either (a TEST-NET-1 address never
        // answers the handshake).
        let unreachable = Client::builder()
            .connect_timeout(Duration::from_millis(100))
            .build()
            .expect("client")
            .get("http://192.0.2.1:81/")
            .send()
            .await
            .expect_err("no handshake");
        assert_eq!(
            SendFailure::of(&unreachable),
            SendFailure::NotConnected,
            "{}",
            error_chain(&unreachable)
        );

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let silent = format!("http://{}/", listener.local_addr().expect("address"));
        let timed_out = client
            .get(silent)
            .timeout(Duration::from_millis(100))
            .send()
            .await
            .expect_err("timeout");
        assert_eq!(SendFailure::of(&timed_out), SendFailure::TimedOut);
        drop(listener);
    }

    #[tokio::test]
    async fn a_safe_request_is_sent_once_more_and_an_unsafe_one_is_not() {
        let client = HttpClient::new(Duration::from_secs(10), |builder| builder)
            .expect("a client without TLS builds");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        let served = tokio::spawn(async move {
            let mut requests = Vec::new();
            for answer in [false, true] {
                let Ok(Ok((mut socket, _))) =
                    tokio::time::timeout(Duration::from_secs(1), listener.accept()).await
                else {
                    break;
                };
                let mut buffer = [0_u8; 4096];
                let read = socket.read(&mut buffer).await.unwrap_or(0);
                requests.push(String::from_utf8_lossy(&buffer[..read]).into_owned());
                if answer {
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                }
                let _ = socket.shutdown().await;
            }
            requests
        });
        let answer = client
            .send(client.post(&url).header(IDEMPOTENCY_KEY, "k-1").body("x"))
            .await
            .expect("the second attempt is answered");
        assert_eq!(answer.status(), 200);
        let requests = served.await.expect("server");
        assert_eq!(requests.len(), 2);
        assert!(requests.iter().all(|request| request.contains("k-1")));

        let (url, accepted) = closing_server().await;
        let refused = client
            .send(client.post(&url).body("x"))
            .await
            .expect_err("not repeated");
        assert_eq!(SendFailure::of(&refused), SendFailure::ClosedBeforeAnswer);
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "sent once only");
    }
}
