//! The notification service against the real broker, registry and database, with events
//! published through a real outbox and relay: one feed entry and one e-mail per lifecycle event,
//! through redelivery and replay; notices waiting for their customer and address; e-mail to
//! files and to a real SMTP server (aiosmtpd) that goes away and comes back.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use auth_kit::AuthSettings;
use auth_kit::testing::TestIssuer;
use bazaar_integration_tests::offsets::wait_until_consumed;
use bazaar_integration_tests::proof::{is_marker_mail, mail_sender_rounds};
use bazaar_integration_tests::publisher::Publisher;
use bazaar_integration_tests::stack::{Server, Service, serve_jwks, service_settings};
use bazaar_integration_tests::{eventually, fresh_database, isolated_kafka, unique_tag};
use events::{
    Event, EventMetadata, OrderCancelled, OrderCreated, OrderLine, OrderPaid, OrderRejected,
    PaymentRefunded, ShipmentDelivered, ShipmentDispatched, ShipmentScheduled, UserRegistered,
};
use notification_service::config::{Config, MailTransport, SmtpTls};
use platform::config::{DatabaseSettings, KafkaSettings};
use serde_json::Value;
use uuid::Uuid;

const TOPICS: &[&str] = notification_service::consumers::TOPICS;
const SENDER: &str = "Bazaar <orders@bazaar.test>";

fn python() -> String {
    std::env::var("BAZAAR_TEST_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cache/bazaar/pyvenv/bin/python")
    })
}

#[derive(Debug, Clone)]
enum Mail {
    Folder(PathBuf),
    Smtp(u16),
}

/// One notification service with its own database and topics, the events it reads published
/// by a stand-in producer, and a JWKS endpoint for customer tokens.
struct Fixture {
    issuer: TestIssuer,
    auth: AuthSettings,
    jwks: Server,
    kafka: KafkaSettings,
    database: DatabaseSettings,
    producer: Publisher,
    mail: Mail,
    group: String,
    service: Option<Service>,
    http: reqwest::Client,
}

impl Fixture {
    async fn start(mail: Mail) -> Self {
        bazaar_integration_tests::init_test_logging();
        let issuer = TestIssuer::new();
        let (jwks, auth) = serve_jwks(&issuer).expect("jwks");
        let kafka = isolated_kafka("notification");
        messaging::topics::apply(
            &messaging::TopicCatalog::bundled().expect("catalog"),
            &kafka,
        )
        .await
        .expect("topics");
        let producer = Publisher::start("producer", &kafka)
            .await
            .expect("producer");
        let database = fresh_database("notification").await.expect("database");
        let mut fixture = Self {
            issuer,
            auth,
            jwks,
            group: kafka.group_id.clone(),
            kafka,
            database,
            producer,
            mail,
            service: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        };
        fixture.start_service().await;
        fixture
    }

    fn config(&self) -> Config {
        let mut config = Config::defaults();
        config.service = service_settings(
            self.database.clone(),
            KafkaSettings {
                group_id: self.group.clone(),
                ..self.kafka.clone()
            },
        );
        config.auth = self.auth.clone();
        config.mail.from = SENDER.into();
        match &self.mail {
            Mail::Folder(dir) => {
                config.mail.transport = MailTransport::File;
                config.mail.file.dir = dir.clone();
            }
            Mail::Smtp(port) => {
                config.mail.transport = MailTransport::Smtp;
                config.mail.smtp.host = "127.0.0.1".into();
                config.mail.smtp.port = *port;
                config.mail.smtp.tls = SmtpTls::None;
                config.mail.smtp.timeout_ms = 2_000;
            }
        }
        config.delivery.poll_ms = 100;
        config.delivery.retry_initial_ms = 100;
        config.delivery.retry_max_ms = 1_000;
        config
    }

    async fn start_service(&mut self) {
        let service = Service::start(notification_service::startup::build(self.config()))
            .await
            .expect("notification service starts");
        self.service = Some(service);
    }

    fn service(&self) -> &Service {
        self.service.as_ref().expect("running")
    }

    /// Replays every topic into the service (once all was consumed) and returns when whatever
    /// the sender (wrongly) might do again is done.
    async fn replay_everything(&mut self) {
        self.wait_until_consumed().await;
        self.restart_with_a_new_consumer_group().await;
        self.wait_until_consumed().await;
        self.wait_for_sender_rounds().await;
    }

    /// Restarts the service under a consumer group that has read nothing, so it reads every
    /// topic again from the beginning: a replay of everything.
    async fn restart_with_a_new_consumer_group(&mut self) {
        self.service
            .take()
            .expect("running")
            .stop()
            .await
            .expect("clean stop");
        self.group = format!("{}-replay-{}", self.kafka.group_id, unique_tag());
        self.start_service().await;
    }

    async fn publish(&self, events: Vec<Event>) -> Vec<EventMetadata> {
        self.producer.publish(&events).await.expect("publish")
    }

    async fn wait_until_consumed(&self) {
        eventually("the producer's relay", Duration::from_secs(30), || async {
            (self.producer.unpublished().await.ok()? == 0).then_some(())
        })
        .await;
        wait_until_consumed(&self.kafka, &self.group, TOPICS).await;
    }

    fn customer(&self) -> (Uuid, String) {
        let user = Uuid::now_v7();
        let token = self
            .issuer
            .token_for(user, &format!("{user}@example.com"), &["customer"]);
        (user, token)
    }

    async fn call(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.service().base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let answer = request.send().await.expect("request");
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    /// The customer's feed: its items and the unread count.
    async fn feed(&self, token: &str) -> (Vec<Value>, i64) {
        let (status, body) = self
            .call(reqwest::Method::GET, "/notifications", Some(token))
            .await;
        assert_eq!(status, 200, "{body}");
        (
            body["items"].as_array().cloned().unwrap_or_default(),
            body["unread"].as_i64().expect("unread"),
        )
    }

    async fn wait_for_feed(&self, token: &str, entries: usize) -> Vec<Value> {
        eventually(
            &format!("{entries} feed entries"),
            Duration::from_secs(60),
            || async {
                let (items, _) = self.feed(token).await;
                (items.len() >= entries).then_some(items)
            },
        )
        .await
    }

    /// Outgoing e-mails but the sender's round markers: (message id, status, attempts, last
    /// error).
    async fn outgoing(&self) -> Vec<(String, String, i32, Option<String>)> {
        let all: Vec<(String, String, i32, Option<String>)> = sqlx::query_as(
            "SELECT message_id, status, attempts, last_error FROM outgoing_emails ORDER BY created_at",
        )
        .fetch_all(&self.service().pool)
        .await
        .expect("outgoing e-mails");
        all.into_iter()
            .filter(|(message_id, ..)| !is_marker_mail(message_id))
            .collect()
    }

    /// Proof that the mail sender has done all it was going to do with the e-mails due now (see
    /// [`mail_sender_rounds`]); its markers stay out of [`eml_files`], [`Self::outgoing`] and
    /// [`SmtpServer::messages`].
    async fn wait_for_sender_rounds(&self) {
        mail_sender_rounds(&self.service().pool)
            .await
            .expect("mail sender rounds");
    }

    async fn stop(self) {
        if let Some(service) = self.service {
            service.stop().await.expect("clean stop");
        }
        self.producer.stop().await.expect("producer stops");
        self.jwks.stop().await;
    }
}

fn registered(user: Uuid, name: &str) -> Event {
    UserRegistered {
        user_id: user.to_string(),
        email: format!("{user}@example.com"),
        display_name: name.into(),
        registered_at: 1_767_225_600_000,
    }
    .into()
}

fn created(order: Uuid, user: Uuid, total_minor: i64) -> Event {
    OrderCreated {
        order_id: order.to_string(),
        user_id: user.to_string(),
        lines: vec![OrderLine {
            sku: "TEE-BLK-M".into(),
            quantity: 2,
            unit_price_minor: total_minor / 2,
        }],
        total_minor,
        currency: "EUR".into(),
        payment_token: "tok_visa".into(),
        shipping_address: "1 Test Street, Springfield".into(),
        address: None,
    }
    .into()
}

fn paid(order: Uuid) -> Event {
    OrderPaid {
        order_id: order.to_string(),
    }
    .into()
}

fn scheduled(order: Uuid) -> Event {
    ShipmentScheduled {
        order_id: order.to_string(),
        shipment_id: Uuid::now_v7().to_string(),
        carrier: "Bazaar Post".into(),
        tracking_number: "BP123456789015".into(),
        pickup_date: "2026-03-09".into(),
    }
    .into()
}

fn dispatched(order: Uuid) -> Event {
    ShipmentDispatched {
        order_id: order.to_string(),
        shipment_id: "s".into(),
    }
    .into()
}

fn delivered(order: Uuid) -> Event {
    ShipmentDelivered {
        order_id: order.to_string(),
        shipment_id: "s".into(),
    }
    .into()
}

fn refunded(order: Uuid) -> Event {
    PaymentRefunded {
        order_id: order.to_string(),
        payment_id: "pi_1".into(),
        amount_minor: 1250,
        currency: "EUR".into(),
    }
    .into()
}

/// The `.eml` files in a folder, by name, with their text; the sender's round markers left out.
fn eml_files(dir: &Path) -> BTreeMap<String, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(entry.path()).ok()?;
            (name.ends_with(".eml") && !is_marker_mail(&text)).then_some((name, text))
        })
        .collect()
}

fn modified_times(dir: &Path) -> BTreeMap<String, SystemTime> {
    eml_files(dir)
        .into_keys()
        .map(|name| {
            let modified = std::fs::metadata(dir.join(&name))
                .and_then(|meta| meta.modified())
                .expect("mtime");
            (name, modified)
        })
        .collect()
}

/// The value of a header in a message's text (unfolded).
fn header(message: &str, name: &str) -> Option<String> {
    let head = message.split("\r\n\r\n").next()?;
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

async fn wait_for_files(dir: &Path, count: usize) -> BTreeMap<String, String> {
    eventually(
        &format!("{count} e-mails in {}", dir.display()),
        Duration::from_secs(60),
        || async {
            let files = eml_files(dir);
            (files.len() >= count).then_some(files)
        },
    )
    .await
}

#[tokio::test]
async fn each_lifecycle_event_becomes_one_feed_entry_and_one_email_even_when_replayed() {
    let mail_dir = std::env::temp_dir().join(format!("bazaar-test-mail-{}", unique_tag()));
    let mut fixture = Fixture::start(Mail::Folder(mail_dir.clone())).await;
    let (ada, ada_token) = fixture.customer();
    let (bob, bob_token) = fixture.customer();
    let (shipped, rejected, refunded_order, declined) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let lifecycle = fixture
        .publish(vec![
            registered(ada, "Ada Lovelace"),
            registered(bob, "Bob"),
            created(shipped, ada, 3998),
            paid(shipped),
            scheduled(shipped),
            dispatched(shipped),
            delivered(shipped),
            created(rejected, ada, 9000),
            OrderRejected {
                order_id: rejected.to_string(),
                reason: "out_of_stock".into(),
                sku: Some("PRINT-A3-001".into()),
            }
            .into(),
            created(refunded_order, ada, 1250),
            OrderCancelled {
                order_id: refunded_order.to_string(),
                reason: "customer_request".into(),
            }
            .into(),
            refunded(refunded_order),
            created(declined, bob, 500),
            OrderCancelled {
                order_id: declined.to_string(),
                reason: "payment_declined".into(),
            }
            .into(),
        ])
        .await;
    let noticed: Vec<&EventMetadata> = lifecycle
        .iter()
        .filter(|meta| !matches!(meta.event_type.as_str(), "UserRegistered" | "OrderCreated"))
        .collect();
    assert_eq!(noticed.len(), 8);

    // The feed: Ada's seven notices, newest first, all unread; Bob's one.
    let items = fixture.wait_for_feed(&ada_token, 7).await;
    let kinds: Vec<&str> = items.iter().filter_map(|i| i["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "payment_refunded",
            "order_cancelled",
            "order_rejected",
            "shipment_delivered",
            "shipment_dispatched",
            "shipment_scheduled",
            "order_paid",
        ]
    );
    let (_, unread) = fixture.feed(&ada_token).await;
    assert_eq!(unread, 7);
    assert!(
        items[6]["body"]
            .as_str()
            .is_some_and(|b| b.contains("39.98 EUR")),
        "{}",
        items[6]
    );
    assert_eq!(items[5]["order_id"], shipped.to_string());
    let bob_items = fixture.wait_for_feed(&bob_token, 1).await;
    assert_eq!(bob_items.len(), 1);
    assert_eq!(bob_items[0]["kind"], "order_cancelled");

    // One e-mail per notice, named after its event and carrying a Message-ID derived from it.
    let files = wait_for_files(&mail_dir, 8).await;
    assert_eq!(files.len(), 8);
    for meta in &noticed {
        let name = format!("{}.eml", meta.event_id);
        let message = files
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} among {:?}", files.keys()));
        assert_eq!(
            header(message, "Message-ID"),
            Some(format!("<{}@bazaar.test>", meta.event_id))
        );
        assert_eq!(
            header(message, "From").as_deref(),
            Some("Bazaar <orders@bazaar.test>")
        );
    }
    let paid_mail = &files[&format!("{}.eml", lifecycle[3].event_id)];
    assert!(
        header(paid_mail, "To").is_some_and(
            |to| to.contains(&format!("<{ada}@example.com>")) && to.contains("Ada Lovelace")
        ),
        "{paid_mail}"
    );
    assert_eq!(
        header(paid_mail, "Subject"),
        items[6]["subject"].as_str().map(str::to_owned)
    );
    assert!(paid_mail.contains("Hello Ada Lovelace,"), "{paid_mail}");
    let declined_mail = &files[&format!("{}.eml", lifecycle[13].event_id)];
    assert!(header(declined_mail, "To").is_some_and(|to| to.contains(&bob.to_string())));

    // Reading: own notifications only; someone else's answers like a missing one.
    let first = items[0]["id"].as_str().expect("id").to_owned();
    let (status, read) = fixture
        .call(
            reqwest::Method::POST,
            &format!("/notifications/{first}/read"),
            Some(&ada_token),
        )
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["read"], true);
    let read_at = read["read_at"].clone();
    assert!(read_at.is_string());
    let (_, again) = fixture
        .call(
            reqwest::Method::POST,
            &format!("/notifications/{first}/read"),
            Some(&ada_token),
        )
        .await;
    assert_eq!(again["read_at"], read_at, "the first read time is kept");
    let (items, unread) = fixture.feed(&ada_token).await;
    assert_eq!(unread, 6);
    assert_eq!(items[0]["read"], true);
    for (path, token) in [
        (
            format!("/notifications/{first}/read"),
            Some(bob_token.as_str()),
        ),
        (
            format!("/notifications/{}/read", Uuid::now_v7()),
            Some(&ada_token),
        ),
        (
            "/notifications/not-a-uuid/read".to_owned(),
            Some(&ada_token),
        ),
    ] {
        let (status, body) = fixture.call(reqwest::Method::POST, &path, token).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (404, &Value::from("not_found")),
            "{path}"
        );
    }
    let (status, _) = fixture
        .call(reqwest::Method::GET, "/notifications", None)
        .await;
    assert_eq!(status, 401);
    let (_, unread) = fixture.feed(&ada_token).await;
    assert_eq!(unread, 6, "Bob's attempt changed nothing");

    // Redelivery: the relay publishes every row again, same event ids.
    fixture.wait_until_consumed().await;
    let before = modified_times(&mail_dir);
    assert_eq!(
        fixture
            .producer
            .republish_everything()
            .await
            .expect("republish"),
        14
    );
    // Replay: a consumer group that starts from the beginning of every topic.
    fixture.replay_everything().await;
    assert_eq!(modified_times(&mail_dir), before, "no e-mail written again");
    assert_eq!(fixture.feed(&ada_token).await.0.len(), 7);
    assert_eq!(fixture.feed(&bob_token).await.0.len(), 1);
    let outgoing = fixture.outgoing().await;
    assert_eq!(outgoing.len(), 8);
    assert!(
        outgoing
            .iter()
            .all(|(_, status, attempts, _)| status == "sent" && *attempts == 1),
        "{outgoing:?}"
    );

    // Latency from publishing an event (outbox commit) to its .eml on disk, one at a time.
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let order = Uuid::now_v7();
        fixture.publish(vec![created(order, ada, 100)]).await;
        let started = Instant::now();
        let meta = fixture.publish(vec![paid(order)]).await;
        let path = mail_dir.join(format!("{}.eml", meta[0].event_id));
        while !path.exists() {
            assert!(started.elapsed() < Duration::from_secs(30), "no {path:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "notification latency, event committed → .eml written: min {:?}, median {:?}, max {:?}",
        latencies[0], latencies[2], latencies[4]
    );

    fixture.stop().await;
    let _ = std::fs::remove_dir_all(&mail_dir);
}

#[tokio::test]
async fn a_notice_waits_for_its_customer_and_address_and_is_mailed_once_both_are_known() {
    let mail_dir = std::env::temp_dir().join(format!("bazaar-test-mail-{}", unique_tag()));
    let fixture = Fixture::start(Mail::Folder(mail_dir.clone())).await;
    let (cleo, cleo_token) = fixture.customer();
    let order = Uuid::now_v7();

    // The refund arrives before the order (another topic, which may be ahead).
    let refund = fixture.publish(vec![refunded(order)]).await;
    fixture.wait_until_consumed().await;
    let (unaddressed,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM notifications WHERE order_id = $1 AND user_id IS NULL",
    )
    .bind(order)
    .fetch_one(&fixture.service().pool)
    .await
    .expect("count");
    assert_eq!(unaddressed, 1, "kept, waiting for its customer");
    assert!(fixture.feed(&cleo_token).await.0.is_empty());

    // The order names the customer: the notice is in her feed, but her address is unknown.
    let paid_event = fixture
        .publish(vec![created(order, cleo, 2500), paid(order)])
        .await;
    let items = fixture.wait_for_feed(&cleo_token, 2).await;
    let kinds: Vec<&str> = items.iter().filter_map(|i| i["kind"].as_str()).collect();
    assert_eq!(kinds, ["order_paid", "payment_refunded"]);
    fixture.wait_until_consumed().await;
    fixture.wait_for_sender_rounds().await;
    assert!(eml_files(&mail_dir).is_empty(), "no address, no e-mail yet");
    let outgoing = fixture.outgoing().await;
    assert_eq!(outgoing.len(), 2);
    assert!(
        outgoing
            .iter()
            .all(|(_, status, attempts, _)| status == "pending" && *attempts == 0),
        "{outgoing:?}"
    );

    // UserRegistered arrives last: both e-mails go out, once each.
    fixture.publish(vec![registered(cleo, "Cleo")]).await;
    let files = wait_for_files(&mail_dir, 2).await;
    for meta in [&refund[0], &paid_event[1]] {
        let message = &files[&format!("{}.eml", meta.event_id)];
        assert!(
            header(message, "To").is_some_and(|to| to.contains(&format!("<{cleo}@example.com>"))),
            "{message}"
        );
    }
    fixture.wait_until_consumed().await;
    fixture.wait_for_sender_rounds().await;
    assert_eq!(eml_files(&mail_dir).len(), 2);
    assert!(
        fixture
            .outgoing()
            .await
            .iter()
            .all(|(_, status, attempts, _)| status == "sent" && *attempts == 1)
    );
    fixture.stop().await;
    let _ = std::fs::remove_dir_all(&mail_dir);
}

/// aiosmtpd, a real SMTP server, storing each message it accepts in a Maildir.
struct SmtpServer {
    child: Child,
    port: u16,
    maildir: PathBuf,
}

impl SmtpServer {
    fn start(port: u16, maildir: &Path) -> Self {
        let child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run aiosmtpd with {} ({error}); run scripts/deps.sh",
                    python()
                )
            });
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "aiosmtpd did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            maildir: maildir.to_owned(),
        }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Every message the server has accepted so far, but the sender's round markers.
    fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
            .filter(|message| !is_marker_mail(message))
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// Maildir writes messages with `\n` line ends; headers are the same.
fn maildir_header(message: &str, name: &str) -> Option<String> {
    header(&message.replace("\r\n", "\n").replace('\n', "\r\n"), name)
}

async fn wait_for_messages(server: &SmtpServer, count: usize) -> Vec<String> {
    eventually(
        &format!("{count} messages at the SMTP server"),
        Duration::from_secs(60),
        || async {
            let messages = server.messages();
            (messages.len() >= count).then_some(messages)
        },
    )
    .await
}

#[tokio::test]
async fn smtp_outage_delays_emails_until_the_server_is_back_and_each_is_delivered_once() {
    let maildir = std::env::temp_dir().join(format!("bazaar-test-maildir-{}", unique_tag()));
    let port = free_port();
    let server = SmtpServer::start(port, &maildir);
    let mut fixture = Fixture::start(Mail::Smtp(port)).await;
    let (dana, _) = fixture.customer();
    let order = Uuid::now_v7();

    let first = fixture
        .publish(vec![
            registered(dana, "Dana"),
            created(order, dana, 3998),
            paid(order),
        ])
        .await;
    let messages = wait_for_messages(&server, 1).await;
    assert_eq!(
        maildir_header(&messages[0], "Message-ID"),
        Some(format!("<{}@bazaar.test>", first[2].event_id))
    );
    assert!(
        maildir_header(&messages[0], "To").is_some_and(|to| to.contains(&dana.to_string())),
        "{}",
        messages[0]
    );

    // The mail server goes away; two more notices are due meanwhile.
    server.stop();
    let outage = fixture
        .publish(vec![scheduled(order), dispatched(order)])
        .await;
    eventually(
        "both e-mails to have failed at least twice",
        Duration::from_secs(60),
        || async {
            let outgoing = fixture.outgoing().await;
            let failing: Vec<_> = outgoing
                .iter()
                .filter(|(_, status, attempts, error)| {
                    status == "pending" && *attempts >= 2 && error.is_some()
                })
                .collect();
            (failing.len() == 2).then_some(())
        },
    )
    .await;
    let (_, _, _, error) = fixture
        .outgoing()
        .await
        .into_iter()
        .find(|(_, status, _, _)| status == "pending")
        .expect("a pending e-mail");
    println!("while the server is down: {}", error.unwrap_or_default());

    // Back on the same port: both are delivered, once.
    let server = SmtpServer::start(port, &maildir);
    let messages = wait_for_messages(&server, 3).await;
    let mut ids: Vec<String> = messages
        .iter()
        .filter_map(|message| maildir_header(message, "Message-ID"))
        .collect();
    ids.sort();
    let mut expected: Vec<String> = [&first[2], &outage[0], &outage[1]]
        .iter()
        .map(|meta| format!("<{}@bazaar.test>", meta.event_id))
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
    eventually(
        "every e-mail marked sent",
        Duration::from_secs(20),
        || async {
            fixture
                .outgoing()
                .await
                .iter()
                .all(|(_, status, _, _)| status == "sent")
                .then_some(())
        },
    )
    .await;

    // Replaying every topic into the service sends nothing again.
    fixture.replay_everything().await;
    assert_eq!(server.messages().len(), 3, "exactly one delivery per event");
    assert_eq!(server.port, port);

    fixture.stop().await;
    server.stop();
    let _ = std::fs::remove_dir_all(&maildir);
}

/// Mailpit as `make test` starts it (`scripts/mailpit.sh`): its API and SMTP port.
struct Mailpit {
    url: String,
    smtp_port: u16,
}

impl Mailpit {
    /// The running Mailpit. `scripts/test.sh` starts it and names it in `BAZAAR_MAILPIT_URL`
    /// and `BAZAAR_MAILPIT_SMTP_PORT`; a plain `cargo test` looks at Mailpit's default ports.
    async fn running(http: &reqwest::Client) -> Self {
        let url = std::env::var("BAZAAR_MAILPIT_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:8025".into())
            .trim_end_matches('/')
            .to_owned();
        let smtp_port = std::env::var("BAZAAR_MAILPIT_SMTP_PORT")
            .ok()
            .and_then(|port| port.parse().ok())
            .unwrap_or(1025);
        let ready = http.get(format!("{url}/readyz")).send().await;
        assert!(
            ready.is_ok_and(|answer| answer.status().is_success()),
            "Mailpit does not answer at {url}: start it with 'scripts/mailpit.sh start' \
             (scripts/test.sh does), or set BAZAAR_MAILPIT_URL and BAZAAR_MAILPIT_SMTP_PORT"
        );
        Self { url, smtp_port }
    }

    /// The messages in the inbox addressed to `to`, newest first, as Mailpit summarises them.
    async fn messages_to(&self, http: &reqwest::Client, to: &str) -> Vec<Value> {
        let search = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/search", self.url),
            [("query", format!("to:\"{to}\""))],
        )
        .expect("search URL");
        let answer: Value = http
            .get(search)
            .send()
            .await
            .expect("Mailpit search")
            .json()
            .await
            .expect("search JSON");
        answer["messages"].as_array().cloned().unwrap_or_default()
    }

    /// One message in full: headers, addresses and bodies.
    async fn message(&self, http: &reqwest::Client, id: &str) -> Value {
        http.get(format!("{}/api/v1/message/{id}", self.url))
            .send()
            .await
            .expect("Mailpit message")
            .json()
            .await
            .expect("message JSON")
    }
}

#[tokio::test]
async fn the_confirmation_email_arrives_in_a_real_inbox_once() {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mailpit = Mailpit::running(&http).await;
    let mut fixture = Fixture::start(Mail::Smtp(mailpit.smtp_port)).await;
    // A customer of this test alone: the inbox is shared with every other run.
    let (dana, _) = fixture.customer();
    let address = format!("{dana}@example.com");
    let order = Uuid::now_v7();
    let published = fixture
        .publish(vec![
            registered(dana, "Dana Scully"),
            created(order, dana, 3998),
            paid(order),
        ])
        .await;

    let summaries = eventually(
        "the confirmation in Mailpit's inbox",
        Duration::from_secs(60),
        || async {
            let messages = mailpit.messages_to(&http, &address).await;
            (!messages.is_empty()).then_some(messages)
        },
    )
    .await;
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    let message = mailpit
        .message(&http, summaries[0]["ID"].as_str().expect("message ID"))
        .await;
    assert_eq!(
        message["MessageID"],
        format!("{}@bazaar.test", published[2].event_id),
        "the Message-ID is the OrderPaid event's"
    );
    assert_eq!(message["From"]["Address"], "orders@bazaar.test");
    assert_eq!(message["To"][0]["Address"], address.as_str());
    assert_eq!(message["To"][0]["Name"], "Dana Scully");
    let reference = notification_rules::order_ref(&order.to_string());
    assert_eq!(
        message["Subject"],
        format!("Order {reference} is confirmed")
    );
    let text = message["Text"].as_str().expect("a text body");
    assert!(text.starts_with("Hello Dana Scully,"), "{text}");
    assert!(
        text.contains(&format!("39.98 EUR for order {order}")),
        "{text}"
    );

    // Replaying every topic into the service mails nothing again.
    fixture.replay_everything().await;
    assert_eq!(
        mailpit.messages_to(&http, &address).await.len(),
        1,
        "exactly one e-mail in the inbox"
    );
    fixture.stop().await;
}
