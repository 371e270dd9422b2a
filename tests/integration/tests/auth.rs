//! The auth service and the gateway against real PostgreSQL and Kafka: accounts, sessions and
//! tokens end to end, forged tokens, admin routes, login throttling, key rotation, the event
//! published on registration, and what the gateway does to every request (ids, traces, limits,
//! streaming, upstream failures, the OpenAPI document).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use auth_kit::AuthSettings;
use auth_kit::keys::SigningKey;
use auth_kit::testing::TestIssuer;
use bazaar_integration_tests::{fresh_database, isolated_kafka};
use futures::StreamExt;
use platform::config::{HttpSettings, KafkaSettings, LogSettings, ServiceSettings};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use serde_json::{Value, json};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery";
/// The gateway's upstream deadline in these tests: long enough for the real auth service to
/// hash a password on a loaded debug build (at 1 s, registrations timed out under a load
/// average of 19), short enough to keep the slow-upstream cases quick.
const UPSTREAM_TIMEOUT_MS: u64 = 3_000;
/// The largest body the gateway forwards in these tests.
const BODY_LIMIT: usize = 4_096;

/// A fake service behind the gateway: echoes what it received, streams events slowly, or
/// answers too late. It records every path forwarded to it (not the gateway's health checks).
struct Stub {
    base_url: String,
    seen: Arc<Mutex<Vec<String>>>,
    stop: actix_web::dev::ServerHandle,
}

async fn echo(
    request: HttpRequest,
    body: Bytes,
    seen: web::Data<Mutex<Vec<String>>>,
) -> HttpResponse {
    seen.lock().expect("lock").push(request.path().to_owned());
    let headers: HashMap<String, String> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "method": request.method().as_str(),
        "path": request.path(),
        "query": request.query_string(),
        "headers": headers,
        "body_bytes": body.len(),
    }))
}

/// Two events: one at once, one half a second after the upstream deadline.
async fn events() -> HttpResponse {
    let stream = futures::stream::iter([(0u64, "pending"), (UPSTREAM_TIMEOUT_MS + 500, "paid")])
        .then(|(delay, status)| async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            Ok::<_, std::io::Error>(Bytes::from(format!(
                "data: {{\"status\":\"{status}\"}}\n\n"
            )))
        });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(stream)
}

/// Answers a second after the upstream deadline.
async fn slow() -> HttpResponse {
    tokio::time::sleep(Duration::from_millis(UPSTREAM_TIMEOUT_MS + 1_000)).await;
    HttpResponse::Ok().body("too late")
}

async fn start_stub() -> Stub {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let data = web::Data::from(seen.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            // The gateway's health checks: a service's own route, not a forwarded request.
            .route("/healthz", web::get().to(HttpResponse::Ok))
            .route("/orders/{id}/events", web::get().to(events))
            .route("/products/slow", web::get().to(slow))
            .default_service(web::to(echo))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .expect("bind stub");
    let port = server.addrs()[0].port();
    let server = server.run();
    let stop = server.handle();
    tokio::spawn(server);
    Stub {
        base_url: format!("http://127.0.0.1:{port}"),
        seen,
        stop,
    }
}

/// The auth service, the gateway in front of it, and the stub standing in for every other
/// service (but notification, which is down).
struct Stack {
    auth_url: String,
    gateway_url: String,
    pool: sqlx::PgPool,
    kafka: KafkaSettings,
    stub: Stub,
    http: reqwest::Client,
    auth_stop: actix_web::dev::ServerHandle,
    auth_task: tokio::task::JoinHandle<anyhow::Result<()>>,
    gateway_stop: actix_web::dev::ServerHandle,
    gateway_task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn stack() -> Stack {
    stack_with(|_| {}).await
}

async fn stack_with(tweak: impl FnOnce(&mut auth_service::config::Config)) -> Stack {
    bazaar_integration_tests::init_test_logging();
    let kafka = isolated_kafka("auth");
    let mut config = auth_service::config::Config {
        service: ServiceSettings {
            http: HttpSettings {
                host: "127.0.0.1".into(),
                port: 0,
                keep_alive_ms: HttpSettings::DEFAULT_KEEP_ALIVE_MS,
            },
            database: fresh_database("auth").await.expect("fresh database"),
            kafka: kafka.clone(),
            log: LogSettings::default(),
        },
        ..auth_service::config::Config::defaults()
    };
    // Generous limits, so only the throttling tests meet them.
    config.login_limit.max_failures_per_address = 1_000;
    config.login_limit.max_failures_per_account_address = 100;
    config.register_limit.max_per_address = 1_000;
    // The gateway reaches the service from this address, as `make run` configures it.
    config.client_address.trusted_proxies = "127.0.0.1".into();
    tweak(&mut config);
    let kafka = config.service.kafka.clone();
    let app = auth_service::startup::build(config)
        .await
        .expect("auth starts");
    let auth_url = format!("http://127.0.0.1:{}", app.port());
    let pool = app.pool().clone();
    let auth_stop = app.stop_handle();
    let auth_task = tokio::spawn(app.run_until_stopped());

    let stub = start_stub().await;
    let mut gateway = gateway::config::Config::defaults();
    gateway.http.port = 0;
    gateway.upstreams.auth = auth_url.clone();
    for upstream in [
        &mut gateway.upstreams.product,
        &mut gateway.upstreams.order,
        &mut gateway.upstreams.inventory,
        &mut gateway.upstreams.shipping,
        &mut gateway.upstreams.payment,
    ] {
        upstream.clone_from(&stub.base_url);
    }
    // Nothing listens on port 1.
    gateway.upstreams.notification = "http://127.0.0.1:1".into();
    gateway.upstreams.timeout_ms = UPSTREAM_TIMEOUT_MS;
    gateway.auth = AuthSettings {
        jwks_url: format!("{auth_url}/.well-known/jwks.json"),
        ..AuthSettings::default()
    };
    gateway.limits.max_body_bytes = BODY_LIMIT;
    gateway.cors.allowed_origins = "https://shop.example".into();
    let gateway = gateway::startup::build(gateway).expect("gateway starts");
    let gateway_url = format!("http://127.0.0.1:{}", gateway.port);
    let gateway_stop = gateway.server.handle();
    let gateway_task = tokio::spawn(gateway.server);
    Stack {
        auth_url,
        gateway_url,
        pool,
        kafka,
        stub,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        auth_stop,
        auth_task,
        gateway_stop,
        gateway_task,
    }
}

/// An answer, read whole.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

impl Stack {
    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    fn gateway(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.gateway_url))
    }

    fn auth(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.auth_url))
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(self.gateway(reqwest::Method::POST, path).json(&body))
            .await
    }

    async fn get_with(&self, path: &str, token: &str) -> Answer {
        self.send(self.gateway(reqwest::Method::GET, path).bearer_auth(token))
            .await
    }

    async fn register(&self, email: &str) -> Answer {
        self.post(
            "/api/auth/register",
            json!({"email": email, "password": PASSWORD, "name": "Test User"}),
        )
        .await
    }

    async fn login(&self, email: &str, password: &str) -> Answer {
        self.post(
            "/api/auth/login",
            json!({"email": email, "password": password}),
        )
        .await
    }

    /// Logs out the session of `refresh`, sending `access` along as the storefront does.
    async fn logout(&self, access: &str, refresh: &str) -> Answer {
        self.send(
            self.gateway(reqwest::Method::POST, "/api/auth/logout")
                .bearer_auth(access)
                .json(&json!({"refresh_token": refresh})),
        )
        .await
    }

    /// Registers `email` and logs in; returns (user id, token pair).
    async fn customer(&self, email: &str) -> (Uuid, Value) {
        let registered = self.register(email).await;
        assert_eq!(registered.status, 201, "{registered:?}");
        let id = Uuid::parse_str(registered.body["id"].as_str().expect("id")).expect("uuid");
        let login = self.login(email, PASSWORD).await;
        assert_eq!(login.status, 200, "{login:?}");
        (id, login.body)
    }

    /// The service's active signing key, to mint tokens it would have signed.
    async fn active_key(&self) -> SigningKey {
        let (kid, der): (String, Vec<u8>) =
            sqlx::query_as("SELECT kid, private_key FROM signing_keys WHERE retired_at IS NULL")
                .fetch_one(&self.pool)
                .await
                .expect("active key");
        SigningKey::from_pkcs8(kid, &der).expect("key")
    }

    async fn stop(self) {
        self.gateway_stop.stop(true).await;
        self.gateway_task
            .await
            .expect("gateway task")
            .expect("gateway stopped cleanly");
        self.auth_stop.stop(true).await;
        tokio::time::timeout(Duration::from_secs(15), self.auth_task)
            .await
            .expect("auth stops")
            .expect("auth task")
            .expect("auth stopped cleanly");
        self.stub.stop.stop(true).await;
    }
}

/// Sends `request` as it is over a fresh connection and returns the status line. For requests an
/// HTTP client would tidy up first (dot segments, chunked bodies it controls).
async fn raw_status(base_url: &str, request: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let address = base_url.trim_start_matches("http://").to_owned();
    tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(address).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // The gateway may answer and close before reading everything; that is the point.
        let _ = socket.write_all(&request);
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    })
    .await
    .expect("raw request")
}

fn token(pair: &Value, which: &str) -> String {
    pair[which]
        .as_str()
        .unwrap_or_else(|| panic!("{which} in {pair}"))
        .to_owned()
}

#[tokio::test]
async fn accounts_work_end_to_end_through_the_gateway() {
    let stack = stack().await;

    let registered = stack.register("Ada@Example.com").await;
    assert_eq!(registered.status, 201, "{registered:?}");
    assert_eq!(registered.body["email"], "Ada@Example.com");
    assert_eq!(registered.body["name"], "Test User");
    assert!(registered.body.get("password_hash").is_none());
    let id = registered.body["id"].as_str().expect("id").to_owned();

    // The same address in any case is taken, but the answer does not say so: it is the answer
    // of a new account, with an id of none. The registrant's password opens nothing.
    let duplicate = stack
        .post(
            "/api/auth/register",
            json!({"email": "ada@example.COM", "password": "another password", "name": "Eve"}),
        )
        .await;
    assert_eq!(duplicate.status, 201, "{duplicate:?}");
    assert_eq!(
        (&duplicate.body["email"], &duplicate.body["name"]),
        (&json!("ada@example.COM"), &json!("Eve"))
    );
    assert_ne!(duplicate.body["id"], registered.body["id"]);
    let (users,): (i64,) = sqlx::query_as("SELECT count(*) FROM users")
        .fetch_one(&stack.pool)
        .await
        .expect("count");
    assert_eq!(users, 1, "nothing was created");
    let squatter = stack.login("ada@example.com", "another password").await;
    assert_eq!(squatter.status, 401, "{squatter:?}");
    let invalid = stack
        .post(
            "/api/auth/register",
            json!({"email": "not-an-address", "password": "short"}),
        )
        .await;
    assert_eq!((invalid.status, invalid.code()), (422, "validation_failed"));
    for field in ["email", "password", "name"] {
        assert!(
            invalid.body["error"]["fields"][field].is_string(),
            "{field}: {invalid:?}"
        );
    }
    let not_json = stack
        .send(
            stack
                .gateway(reqwest::Method::POST, "/api/auth/register")
                .body("{broken"),
        )
        .await;
    assert!(matches!(not_json.status, 415 | 422 | 400), "{not_json:?}");
    assert!(!not_json.code().is_empty(), "{not_json:?}");

    let login = stack.login("ada@example.com", PASSWORD).await;
    assert_eq!(login.status, 200, "{login:?}");
    assert_eq!(login.body["token_type"], "Bearer");
    assert_eq!(login.body["expires_in"], 900);
    assert_eq!(login.header("cache-control"), Some("no-store"));
    let access = token(&login.body, "access_token");
    let refresh = token(&login.body, "refresh_token");

    let me = stack.get_with("/api/auth/me", &access).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(
        me.body,
        json!({"id": id, "email": "Ada@Example.com", "name": "Test User", "roles": ["customer"]})
    );

    // Without a token, protected routes answer 401 in the shared shape.
    let anonymous = stack
        .send(stack.gateway(reqwest::Method::GET, "/api/auth/me"))
        .await;
    assert_eq!((anonymous.status, anonymous.code()), (401, "unauthorized"));
    assert!(
        anonymous
            .header("www-authenticate")
            .is_some_and(|value| value.starts_with("Bearer"))
    );

    let refreshed = stack
        .post("/api/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    let new_access = token(&refreshed.body, "access_token");
    let new_refresh = token(&refreshed.body, "refresh_token");
    assert_ne!(new_refresh, refresh);
    assert_eq!(
        stack.get_with("/api/auth/me", &new_access).await.status,
        200
    );

    let logout = stack.logout(&new_access, &new_refresh).await;
    assert_eq!(logout.status, 204, "{logout:?}");
    let after_logout = stack
        .post("/api/auth/refresh", json!({"refresh_token": new_refresh}))
        .await;
    assert_eq!(
        (after_logout.status, after_logout.code()),
        (401, "invalid_refresh_token")
    );

    let no_token = stack.post("/api/auth/logout", json!({})).await;
    assert_eq!(
        (no_token.status, no_token.code()),
        (422, "validation_failed"),
        "{no_token:?}"
    );

    // Sign out everywhere ends every session of the user, on every device.
    let first = stack.login("ada@example.com", PASSWORD).await.body;
    let second = stack.login("ada@example.com", PASSWORD).await.body;
    let anonymous = stack.post("/api/auth/logout-everywhere", json!({})).await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let everywhere = stack
        .send(
            stack
                .gateway(reqwest::Method::POST, "/api/auth/logout-everywhere")
                .bearer_auth(token(&second, "access_token")),
        )
        .await;
    assert_eq!(everywhere.status, 204, "{everywhere:?}");
    for pair in [&first, &second] {
        let refused = stack
            .post(
                "/api/auth/refresh",
                json!({"refresh_token": token(pair, "refresh_token")}),
            )
            .await;
        assert_eq!(refused.status, 401, "{refused:?}");
    }
    let missing = stack.post("/api/auth/refresh", json!({})).await;
    assert_eq!((missing.status, missing.code()), (422, "validation_failed"));
    stack.stop().await;
}

#[tokio::test]
async fn logout_ends_the_session_even_when_the_access_token_has_expired() {
    let stack = stack().await;
    let (id, pair) = stack.customer("expired@example.com").await;
    let issuer = TestIssuer::from_signing_key(AuthSettings::default(), stack.active_key().await);
    let expired = issuer.expired_token_for(id, "expired@example.com", &["customer"]);
    assert_eq!(stack.get_with("/api/auth/me", &expired).await.status, 401);
    let refresh = token(&pair, "refresh_token");
    let logout = stack.logout(&expired, &refresh).await;
    assert_eq!(logout.status, 204, "{logout:?}");
    let after = stack
        .post("/api/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(
        (after.status, after.code()),
        (401, "invalid_refresh_token"),
        "the session is over: {after:?}"
    );
    // An unknown token is answered alike: the answer tells nothing about tokens.
    let unknown = stack
        .post("/api/auth/logout", json!({"refresh_token": "not-a-token"}))
        .await;
    assert_eq!(unknown.status, 204, "{unknown:?}");
    stack.stop().await;
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_however_often_it_is_refreshed() {
    let lifetime = Duration::from_secs(3);
    let stack = stack_with(|config| {
        config.tokens.refresh_ttl_secs = 3_600;
        config.tokens.refresh_absolute_ttl_secs = lifetime.as_secs();
    })
    .await;
    let (_, pair) = stack.customer("absolute@example.com").await;
    // The deadline was fixed while logging in, so before now.
    let logged_in = Instant::now();
    let mut current = token(&pair, "refresh_token");
    let mut refreshes = 0;
    // Refreshing keeps working until the session's deadline, and never after it, although each
    // refresh token alone would live an hour.
    let refused_at = loop {
        assert!(
            logged_in.elapsed() < lifetime * 5,
            "still refreshing {:?} after login",
            logged_in.elapsed()
        );
        let before = logged_in.elapsed();
        let answer = stack
            .post("/api/auth/refresh", json!({"refresh_token": current}))
            .await;
        match answer.status {
            200 => {
                assert!(before < lifetime, "refreshed {before:?} after login");
                current = token(&answer.body, "refresh_token");
                refreshes += 1;
            }
            401 => break logged_in.elapsed(),
            _ => panic!("{answer:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(refreshes >= 2, "{refreshes} refreshes");
    // Late only by the login's answer, which took less than a second.
    assert!(
        refused_at >= lifetime - Duration::from_secs(1),
        "{refused_at:?}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_refresh_token_works_once_and_its_reuse_ends_the_session() {
    let stack = stack().await;
    let (_, pair) = stack.customer("reuse@example.com").await;
    let stolen = token(&pair, "refresh_token");

    let first = stack
        .post("/api/auth/refresh", json!({"refresh_token": stolen}))
        .await;
    assert_eq!(first.status, 200, "{first:?}");
    let successor = token(&first.body, "refresh_token");

    let again = stack
        .post("/api/auth/refresh", json!({"refresh_token": stolen}))
        .await;
    assert_eq!((again.status, again.code()), (401, "invalid_refresh_token"));
    // The reuse revoked the family: the successor is dead too.
    let successor_refused = stack
        .post("/api/auth/refresh", json!({"refresh_token": successor}))
        .await;
    assert_eq!(successor_refused.status, 401, "{successor_refused:?}");

    // Two refreshes racing with one token: exactly one wins.
    let (_, pair) = stack.customer("race@example.com").await;
    let racing = token(&pair, "refresh_token");
    let (a, b) = tokio::join!(
        stack.post("/api/auth/refresh", json!({"refresh_token": racing})),
        stack.post("/api/auth/refresh", json!({"refresh_token": racing})),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401], "{a:?} {b:?}");

    // Only hashes are stored.
    let stored: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT token_hash FROM refresh_tokens")
        .fetch_all(&stack.pool)
        .await
        .expect("tokens");
    assert!(stored.iter().all(|(hash,)| hash.len() == 32));
    assert!(
        stored
            .iter()
            .all(|(hash,)| hash.as_slice() != racing.as_bytes())
    );
    stack.stop().await;
}

#[tokio::test]
async fn forged_tokens_get_401_at_the_gateway_and_at_the_auth_service() {
    let stack = stack().await;
    let (id, _) = stack.customer("forgery@example.com").await;
    // Tokens as the service itself would sign them, and every kind of forgery of them.
    let issuer = TestIssuer::from_signing_key(AuthSettings::default(), stack.active_key().await);
    let genuine = issuer.token_for(id, "forgery@example.com", &["customer"]);
    assert_eq!(stack.get_with("/api/auth/me", &genuine).await.status, 200);
    assert_eq!(stack.get_with("/api/cart", &genuine).await.status, 200);
    let forwarded_before = stack.stub.seen.lock().expect("lock").len();

    for (what, forged) in issuer.forged_tokens_for(id, "forgery@example.com", &["customer"]) {
        let at_gateway = stack.get_with("/api/auth/me", &forged).await;
        assert_eq!(
            (at_gateway.status, at_gateway.code()),
            (401, "unauthorized"),
            "{what} at the gateway: {at_gateway:?}"
        );
        let forwarded = stack.get_with("/api/cart", &forged).await;
        assert_eq!(forwarded.status, 401, "{what} towards the order service");
        let direct = stack
            .send(
                stack
                    .auth(reqwest::Method::GET, "/auth/me")
                    .bearer_auth(&forged),
            )
            .await;
        assert_eq!(
            (direct.status, direct.code()),
            (401, "unauthorized"),
            "{what} at the auth service: {direct:?}"
        );
        // The messages do not tell forgeries apart (only expiry is named, to prompt a refresh).
        if what != "expired" {
            assert_eq!(
                at_gateway.body["error"]["message"], "the access token is invalid",
                "{what}"
            );
        }
    }
    assert_eq!(
        stack.stub.seen.lock().expect("lock").len(),
        forwarded_before,
        "no forged request reached a service"
    );
    stack.stop().await;
}

#[tokio::test]
async fn customers_get_403_on_admin_routes_and_admins_get_through() {
    let stack = stack().await;
    let (_, customer) = stack.customer("customer@example.com").await;
    let customer = token(&customer, "access_token");
    for (method, path) in [
        (reqwest::Method::POST, "/api/admin/products"),
        (reqwest::Method::PUT, "/api/admin/products/123"),
        (reqwest::Method::PUT, "/api/admin/inventory/TEE-M"),
        (reqwest::Method::GET, "/api/admin/shipments"),
        (reqwest::Method::GET, "/api/admin/anything-else"),
    ] {
        let answer = stack
            .send(
                stack
                    .gateway(method.clone(), path)
                    .bearer_auth(&customer)
                    .json(&json!({})),
            )
            .await;
        assert_eq!(
            (answer.status, answer.code()),
            (403, "forbidden"),
            "{method} {path}: {answer:?}"
        );
    }
    assert!(stack.stub.seen.lock().expect("lock").is_empty());

    // No password, no admin.
    assert!(
        auth_service::admin::read_password(None, &b""[..]).is_err(),
        "create-admin has no default password"
    );
    let admin = auth_service::admin::create_admin(
        &stack.pool,
        "root@example.com",
        "Root",
        "an admin's long password",
    )
    .await
    .expect("create admin");
    assert!(admin.roles.iter().any(|role| role == "admin"));
    assert!(
        auth_service::admin::create_admin(&stack.pool, "root@example.com", "Root", "another one!")
            .await
            .is_err(),
        "a second admin with the same address"
    );
    let login = stack
        .login("root@example.com", "an admin's long password")
        .await;
    assert_eq!(login.status, 200, "{login:?}");
    let admin_token = token(&login.body, "access_token");
    let me = stack.get_with("/api/auth/me", &admin_token).await;
    assert_eq!(me.body["roles"], json!(["customer", "admin"]));

    let forwarded = stack
        .send(
            stack
                .gateway(reqwest::Method::PUT, "/api/admin/inventory/TEE-M")
                .bearer_auth(&admin_token)
                .json(&json!({"on_hand": 5})),
        )
        .await;
    assert_eq!(forwarded.status, 200, "{forwarded:?}");
    assert_eq!(forwarded.body["path"], "/admin/inventory/TEE-M");
    assert_eq!(forwarded.body["method"], "PUT");
    // The service gets the token too, to verify it again.
    assert_eq!(
        forwarded.body["headers"]["authorization"],
        format!("Bearer {admin_token}")
    );
    let nowhere = stack
        .get_with("/api/admin/anything-else", &admin_token)
        .await;
    assert_eq!((nowhere.status, nowhere.code()), (404, "not_found"));
    stack.stop().await;
}

/// A login straight at the auth service, as the gateway would forward it for `client`.
fn login_from(stack: &Stack, client: &str, email: &str, password: &str) -> reqwest::RequestBuilder {
    stack
        .auth(reqwest::Method::POST, "/auth/login")
        .header("x-forwarded-for", client)
        .json(&json!({"email": email, "password": password}))
}

#[tokio::test]
async fn a_strangers_wrong_passwords_never_shut_the_owner_out_but_guessing_is_stopped() {
    let stack = stack_with(|config| {
        config.login_limit.max_failures_per_account_address = 3;
        config.login_limit.max_failures_per_address = 8;
        config.login_limit.window_secs = 60;
    })
    .await;
    for email in ["owner@example.com", "other@example.com"] {
        assert_eq!(stack.register(email).await.status, 201);
    }
    let stranger = "198.51.100.7";

    for attempt in 1..=3 {
        let wrong = stack
            .send(login_from(
                &stack,
                stranger,
                "owner@example.com",
                "wrong password",
            ))
            .await;
        assert_eq!(
            (wrong.status, wrong.code()),
            (401, "invalid_credentials"),
            "attempt {attempt}: {wrong:?}"
        );
    }
    // The stranger's guesses at this account are over for the window, even a right one.
    let limited = stack
        .send(login_from(&stack, stranger, "owner@example.com", PASSWORD))
        .await;
    assert_eq!(
        (limited.status, limited.code()),
        (429, "too_many_requests"),
        "{limited:?}"
    );
    let retry_after: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");

    // The owner, through the gateway from another address, gets in, as often as they like:
    // right passwords use up no allowance.
    for attempt in 1..=10 {
        let owner = stack.login("owner@example.com", PASSWORD).await;
        assert_eq!(owner.status, 200, "owner's login {attempt}: {owner:?}");
    }
    // The owner's own typos are counted apart from the stranger's.
    let typo = stack.login("owner@example.com", "wrong password").await;
    assert_eq!(typo.status, 401, "{typo:?}");

    // An unknown address answers exactly like a wrong password.
    let unknown = stack
        .send(login_from(
            &stack,
            stranger,
            "nobody@example.com",
            "wrong password",
        ))
        .await;
    assert_eq!(unknown.status, 401);
    let wrong = stack
        .send(login_from(
            &stack,
            stranger,
            "other@example.com",
            "wrong password",
        ))
        .await;
    assert_eq!(unknown.body, wrong.body);

    // Spraying other accounts from the stranger's address: six counted so far (the refused
    // attempt too), two more, then nothing from that address, whatever the account.
    for account in ["a@example.com", "b@example.com"] {
        let wrong = stack
            .send(login_from(&stack, stranger, account, "wrong password"))
            .await;
        assert_eq!(wrong.status, 401, "{account}: {wrong:?}");
    }
    let sprayed = stack
        .send(login_from(&stack, stranger, "other@example.com", PASSWORD))
        .await;
    assert_eq!(sprayed.status, 429, "{sprayed:?}");
    let other = stack.login("other@example.com", PASSWORD).await;
    assert_eq!(
        other.status, 200,
        "other addresses are not affected: {other:?}"
    );

    // What no account can have is refused before it reaches the database.
    let nul = stack.login("nul\u{0}@example.com", PASSWORD).await;
    assert_eq!(
        (nul.status, nul.code()),
        (422, "validation_failed"),
        "{nul:?}"
    );

    // Concurrent guesses cannot slip past the count: of twelve at once, three are judged.
    let guesses = (0..12).map(|_| {
        stack.send(login_from(
            &stack,
            "203.0.113.50",
            "other@example.com",
            "wrong password",
        ))
    });
    let mut statuses: Vec<u16> = futures::future::join_all(guesses)
        .await
        .iter()
        .map(|answer| answer.status)
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [[401; 3].as_slice(), &[429; 9]].concat());
    stack.stop().await;
}

#[tokio::test]
async fn a_forwarded_address_is_believed_only_from_a_trusted_proxy() {
    // The default: no proxy is trusted, so the peer (this test, 127.0.0.1) is the client
    // whatever X-Forwarded-For claims.
    let stack = stack_with(|config| {
        config.login_limit.max_failures_per_account_address = 2;
        config.client_address = auth_service::config::Config::defaults().client_address;
    })
    .await;
    assert_eq!(stack.register("target@example.com").await.status, 201);
    let mut statuses = Vec::new();
    for claimed in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        let answer = stack
            .send(login_from(
                &stack,
                claimed,
                "target@example.com",
                "wrong password",
            ))
            .await;
        statuses.push(answer.status);
    }
    assert_eq!(
        statuses,
        [401, 401, 429],
        "a made-up X-Forwarded-For does not buy new guesses"
    );
    stack.stop().await;
}

#[tokio::test]
async fn registration_is_rate_limited_per_address() {
    let stack = stack_with(|config| config.register_limit.max_per_address = 3).await;
    let register_from = |client: &str, email: &str| {
        stack
            .auth(reqwest::Method::POST, "/auth/register")
            .header("x-forwarded-for", client)
            .json(&json!({"email": email, "password": PASSWORD, "name": "Test User"}))
    };
    for n in 1..=3 {
        let email = format!("signup-{n}@example.com");
        let answer = stack.send(register_from("198.51.100.9", &email)).await;
        assert_eq!(answer.status, 201, "{n}: {answer:?}");
    }
    let limited = stack
        .send(register_from("198.51.100.9", "signup-4@example.com"))
        .await;
    assert_eq!(
        (limited.status, limited.code()),
        (429, "too_many_requests"),
        "{limited:?}"
    );
    assert!(limited.header("retry-after").is_some(), "{limited:?}");
    let elsewhere = stack
        .send(register_from("198.51.100.10", "signup-4@example.com"))
        .await;
    assert_eq!(elsewhere.status, 201, "{elsewhere:?}");
    stack.stop().await;
}

#[tokio::test]
async fn registration_takes_as_long_for_a_taken_address_as_for_a_free_one() {
    let stack = stack().await;
    assert_eq!(stack.register("taken@example.com").await.status, 201);
    let shared = &stack;
    let timed = |email: String| async move {
        let started = Instant::now();
        let answer = shared
            .send(
                shared
                    .auth(reqwest::Method::POST, "/auth/register")
                    .json(&json!({"email": email, "password": PASSWORD, "name": "Test User"})),
            )
            .await;
        assert_eq!(answer.status, 201, "{answer:?}");
        started.elapsed()
    };
    let (mut free, mut taken) = (Vec::new(), Vec::new());
    for n in 0..5 {
        free.push(timed(format!("free-{n}@example.com")).await);
        taken.push(timed("TAKEN@example.com".to_owned()).await);
    }
    free.sort_unstable();
    taken.sort_unstable();
    let (free, taken) = (free[2], taken[2]);
    // Both hash the password; an early answer for a taken address took a fraction of it. The
    // bound leaves room for a busy machine and checks only the direction that would leak.
    assert!(
        taken * 2 > free,
        "median for a taken address {taken:?}, for a free one {free:?}"
    );
    stack.stop().await;
}

/// Reads the first message of a topic.
async fn first_message(
    kafka: &KafkaSettings,
    topic: &str,
) -> (String, Vec<u8>, HashMap<String, String>) {
    let consumer: StreamConsumer = messaging::client::base_config(kafka)
        .set(
            "group.id",
            format!("{}-reader-{}", kafka.group_id, Uuid::now_v7()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    consumer
        .subscribe(&[&kafka.topic(topic)])
        .expect("subscribe");
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.stream().next())
        .await
        .expect("a message within 30 s")
        .expect("stream")
        .expect("message");
    let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| {
                    (
                        header.key.to_owned(),
                        String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (key, message.payload().unwrap_or_default().to_vec(), headers)
}

#[tokio::test]
async fn user_registered_reaches_kafka_with_the_request_trace() {
    let kafka = isolated_kafka("auth");
    messaging::topics::apply(
        &messaging::TopicCatalog::bundled().expect("catalog"),
        &kafka,
    )
    .await
    .expect("topics");
    let topics = kafka.clone();
    let stack = stack_with(move |config| config.service.kafka = topics).await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let registered = stack
        .send(
            stack
                .gateway(reqwest::Method::POST, "/api/auth/register")
                .header("traceparent", trace)
                .json(&json!({"email": "kafka@example.com", "password": PASSWORD, "name": "Kay"})),
        )
        .await;
    assert_eq!(registered.status, 201, "{registered:?}");
    let id = registered.body["id"].as_str().expect("id").to_owned();

    let (key, payload, headers) = first_message(&stack.kafka, "user-events").await;
    assert_eq!(key, id);
    let (schema_id, datum) = events::wire::unframe(&payload).expect("Confluent framing");
    let registry = messaging::registry::SchemaRegistryClient::new(&stack.kafka.schema_registry_url);
    let schema = registry.schema(schema_id).await.expect("writer schema");
    let event = events::decode(&schema, datum).expect("decode");
    let events::Event::UserRegistered(user) = event else {
        panic!("expected UserRegistered, got {event:?}");
    };
    assert_eq!(user.user_id, id);
    assert_eq!(user.email, "kafka@example.com");
    assert_eq!(user.display_name, "Kay");
    assert!(user.registered_at > 0);
    assert_eq!(headers["event-type"], "UserRegistered");
    assert_eq!(headers["correlation-id"], id);
    // The trace the client started runs through the gateway and the service into Kafka.
    assert!(
        headers["traceparent"].starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{headers:?}"
    );
    assert_ne!(headers["traceparent"], trace, "a span of its own");
    stack.stop().await;
}

#[tokio::test]
async fn the_openapi_document_is_the_declared_one_and_swagger_ui_is_served() {
    let stack = stack().await;
    let document = stack
        .send(stack.gateway(reqwest::Method::GET, "/api/openapi.json"))
        .await;
    assert_eq!(document.status, 200);
    assert!(
        document.body["openapi"]
            .as_str()
            .is_some_and(|version| version.starts_with("3."))
    );
    let declared: Value = serde_json::from_str(gateway::api::document()).expect("json");
    assert_eq!(
        document.body, declared,
        "the served document is the declared one"
    );
    // The gateway enforces each operation's security requirement before forwarding: without a
    // token, every operation that declares one is refused there.
    let paths = declared["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    for (template, item) in paths {
        let path = template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "X-1"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for (method, operation) in item.as_object().expect("path item") {
            let secured = operation["security"]
                .as_array()
                .is_some_and(|requirements| !requirements.is_empty());
            if !secured {
                continue;
            }
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let answer = stack
                .send(stack.gateway(method.clone(), &path).json(&json!({})))
                .await;
            assert_eq!(
                (answer.status, answer.code()),
                (401, "unauthorized"),
                "{method} {path}: {answer:?}"
            );
        }
    }
    assert!(stack.stub.seen.lock().expect("lock").is_empty());

    let redirect = stack
        .send(stack.gateway(reqwest::Method::GET, "/api/docs"))
        .await;
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.header("location"), Some("/api/docs/"));
    let page = stack
        .send(stack.gateway(reqwest::Method::GET, "/api/docs/"))
        .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .as_str()
            .is_some_and(|html| html.contains("swagger-ui"))
    );
    let initializer = stack
        .send(stack.gateway(reqwest::Method::GET, "/api/docs/swagger-initializer.js"))
        .await;
    assert!(
        initializer
            .body
            .as_str()
            .is_some_and(|js| js.contains("/api/openapi.json")),
        "{initializer:?}"
    );
    let missing = stack
        .send(stack.gateway(reqwest::Method::GET, "/api/docs/nope.js"))
        .await;
    assert_eq!((missing.status, missing.code()), (404, "not_found"));

    let jwks = stack
        .send(stack.gateway(reqwest::Method::GET, "/.well-known/jwks.json"))
        .await;
    assert_eq!(jwks.status, 200);
    let keys = jwks.body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert!(keys[0].get("d").is_none(), "no private key material");
    stack.stop().await;
}

#[tokio::test]
async fn the_gateway_adds_request_id_and_trace_and_enforces_limits() {
    let stack = stack().await;
    let (_, pair) = stack.customer("edge@example.com").await;
    let access = token(&pair, "access_token");

    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let echoed = stack
        .send(
            stack
                .gateway(reqwest::Method::PUT, "/api/cart/items/TEE-M?note=1")
                .bearer_auth(&access)
                .header("traceparent", trace)
                .header("x-forwarded-for", "6.6.6.6")
                .header("idempotency-key", "k-1")
                .json(&json!({"quantity": 2})),
        )
        .await;
    assert_eq!(echoed.status, 200, "{echoed:?}");
    let seen = &echoed.body["headers"];
    assert_eq!(echoed.body["path"], "/cart/items/TEE-M");
    assert_eq!(echoed.body["query"], "note=1");
    assert_eq!(seen["idempotency-key"], "k-1");
    let request_id = echoed.header("x-request-id").expect("x-request-id");
    assert_eq!(seen["x-request-id"], request_id);
    let forwarded_trace = seen["traceparent"].as_str().expect("traceparent");
    assert!(forwarded_trace.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
    assert_ne!(forwarded_trace, trace);
    assert_eq!(
        seen["x-forwarded-for"], "127.0.0.1",
        "the client's claim is dropped"
    );

    // A plain client request id is kept; one is made up otherwise.
    let kept = stack
        .send(
            stack
                .gateway(reqwest::Method::GET, "/api/products")
                .header("x-request-id", "client-42"),
        )
        .await;
    assert_eq!(kept.header("x-request-id"), Some("client-42"));
    let made = stack
        .send(stack.gateway(reqwest::Method::GET, "/api/products"))
        .await;
    assert!(
        made.header("x-request-id")
            .is_some_and(|id| Uuid::parse_str(id).is_ok())
    );
    assert!(made.body["headers"]["traceparent"].is_string());

    // Bodies over the limit never reach the service.
    let before = stack.stub.seen.lock().expect("lock").len();
    let too_big = stack
        .send(
            stack
                .gateway(reqwest::Method::PUT, "/api/cart/items/TEE-M")
                .bearer_auth(&access)
                .header("content-type", "application/json")
                .body(format!(
                    "{{\"quantity\": 1, \"pad\": \"{}\"}}",
                    "x".repeat(BODY_LIMIT)
                )),
        )
        .await;
    assert_eq!((too_big.status, too_big.code()), (413, "payload_too_large"));
    let mut chunked = format!(
        "POST /api/orders HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {access}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..8 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b' '; 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let status = raw_status(&stack.gateway_url, chunked).await;
    assert!(
        status.contains(" 413 "),
        "a chunked body is counted as it arrives: {status}"
    );
    assert_eq!(stack.stub.seen.lock().expect("lock").len(), before);

    // Paths that could climb out of their prefix once normalised (sent raw: HTTP clients would
    // resolve the dot segments themselves), and paths that lead nowhere.
    for path in [
        "/api/cart/../admin/products",
        "/api/cart/%2e%2e/admin/products",
        "/api/orders/..%2fadmin",
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {access}\r\n\
             Connection: close\r\n\r\n"
        );
        let status = raw_status(&stack.gateway_url, request.into_bytes()).await;
        assert!(status.contains(" 400 "), "{path}: {status}");
    }
    let nul = stack
        .send(stack.gateway(reqwest::Method::GET, "/api/products?q=a%00b"))
        .await;
    assert_eq!((nul.status, nul.code()), (400, "bad_request"));
    let nowhere = stack.get_with("/api/nowhere", &access).await;
    assert_eq!((nowhere.status, nowhere.code()), (404, "not_found"));
    for (method, path, allowed) in [
        (reqwest::Method::GET, "/api/auth/login", "POST"),
        (reqwest::Method::DELETE, "/api/auth/me", "GET"),
        (reqwest::Method::POST, "/.well-known/jwks.json", "GET"),
    ] {
        let wrong = stack
            .send(stack.gateway(method.clone(), path).bearer_auth(&access))
            .await;
        assert_eq!(
            (wrong.status, wrong.code(), wrong.header("allow")),
            (405, "method_not_allowed", Some(allowed)),
            "{method} {path}"
        );
    }

    // CORS: the configured origin is let in, others get no grant.
    let preflight = stack
        .send(
            stack
                .gateway(reqwest::Method::OPTIONS, "/api/cart")
                .header("origin", "https://shop.example")
                .header("access-control-request-method", "PUT")
                .header("access-control-request-headers", "authorization"),
        )
        .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    assert!(
        preflight
            .header("access-control-allow-headers")
            .is_some_and(|headers| headers.contains("authorization"))
    );
    let stranger = stack
        .send(
            stack
                .gateway(reqwest::Method::GET, "/api/products")
                .header("origin", "https://evil.example"),
        )
        .await;
    assert_eq!(stranger.status, 200);
    assert_eq!(stranger.header("access-control-allow-origin"), None);
    stack.stop().await;
}

#[tokio::test]
async fn order_events_stream_through_without_buffering() {
    let stack = stack().await;
    let (_, pair) = stack.customer("stream@example.com").await;
    let started = Instant::now();
    let mut response = stack
        .gateway(reqwest::Method::GET, "/api/orders/42/events")
        .bearer_auth(token(&pair, "access_token"))
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok()),
        Some("text/event-stream")
    );
    // The stub sends its second event half a second after the upstream deadline.
    let second_event_at = Duration::from_millis(UPSTREAM_TIMEOUT_MS + 500);
    let before_the_second = second_event_at - Duration::from_millis(100);
    let first = tokio::time::timeout(before_the_second, response.chunk())
        .await
        .expect("the first event arrives before the stream ends")
        .expect("chunk")
        .expect("data");
    assert!(String::from_utf8_lossy(&first).contains("pending"));
    assert!(started.elapsed() < before_the_second);
    // The second comes after the upstream deadline: streams have none.
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        rest.extend_from_slice(&chunk);
    }
    assert!(String::from_utf8_lossy(&rest).contains("paid"));
    assert!(started.elapsed() >= before_the_second);
    stack.stop().await;
}

#[tokio::test]
async fn a_slow_service_gives_504_and_a_dead_one_502_without_internals() {
    let stack = stack().await;
    let (_, pair) = stack.customer("failures@example.com").await;
    let started = Instant::now();
    let slow = stack
        .send(stack.gateway(reqwest::Method::GET, "/api/products/slow"))
        .await;
    assert_eq!((slow.status, slow.code()), (504, "upstream_timeout"));
    // Cut at the deadline, not when the stub finally answers.
    assert!(started.elapsed() < Duration::from_millis(UPSTREAM_TIMEOUT_MS + 900));

    let dead = stack
        .get_with("/api/notifications", &token(&pair, "access_token"))
        .await;
    assert_eq!((dead.status, dead.code()), (502, "upstream_unavailable"));
    for answer in [&slow, &dead] {
        let text = answer.body.to_string();
        assert!(
            !text.contains("127.0.0.1") && !text.contains("error sending"),
            "{text}"
        );
    }
    stack.stop().await;
}

#[tokio::test]
async fn a_key_rotation_keeps_earlier_tokens_valid() {
    let stack = stack().await;
    let (_, before) = stack.customer("rotate@example.com").await;
    let old_token = token(&before, "access_token");
    assert_eq!(stack.get_with("/api/auth/me", &old_token).await.status, 200);
    let old_kid = stack.active_key().await.kid().to_owned();

    let rotation = auth_service::keys::rotate(&stack.pool, Duration::from_secs(900))
        .await
        .expect("rotate");
    assert_eq!(rotation.retired.as_deref(), Some(old_kid.as_str()));
    assert_ne!(rotation.active, old_kid);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        rotation.retired_published_until.timestamp() > i64::try_from(now + 900).expect("time"),
        "the retired key outlives the tokens it signed"
    );

    let after = stack.login("rotate@example.com", PASSWORD).await;
    assert_eq!(after.status, 200);
    let new_token = token(&after.body, "access_token");
    // Both verify at once, at the gateway and at the service: no refusal window.
    for access in [&new_token, &old_token] {
        assert_eq!(stack.get_with("/api/auth/me", access).await.status, 200);
        let direct = stack
            .send(
                stack
                    .auth(reqwest::Method::GET, "/auth/me")
                    .bearer_auth(access),
            )
            .await;
        assert_eq!(direct.status, 200, "{direct:?}");
    }
    let jwks = stack
        .send(stack.gateway(reqwest::Method::GET, "/.well-known/jwks.json"))
        .await;
    let kids: Vec<&str> = jwks.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|key| key["kid"].as_str())
        .collect();
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert!(kids.contains(&old_kid.as_str()));
    assert!(kids.contains(&rotation.active.as_str()));
    stack.stop().await;
}
