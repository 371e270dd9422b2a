//! The `bazaar` operations tool, run as the operator runs it (a subprocess), against the real
//! broker, registry and service databases of a running stack.
//!
//! The binary comes from the same target directory as this test (`cargo build --workspace
//! --bins`, which `make test` runs first); `BAZAAR_CLI_BIN` points elsewhere.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bazaar_integration_tests::offsets::wait_until_consumed;
use bazaar_integration_tests::publisher::Publisher;
use bazaar_integration_tests::stack::{Customer, Stack, StackOptions};
use bazaar_integration_tests::{
    bazaar_binary, eventually, fresh_messaging_database, isolated_kafka,
};
use events::{
    Event, OrderCancelled, OrderCreated, OrderLine, PaymentRefunded, ReservationExpired,
    ShipmentDelivered, ShipmentDispatched, UserRegistered,
};
use messaging::consumer::ConsumerSettings;
use messaging::{
    EventHandler, HandlerError, IdempotentConsumer, ReceivedEvent, Relay, RelaySettings,
};
use platform::config::KafkaSettings;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Running the tool

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|error| panic!("not JSON ({error}): {self:?}"))
    }

    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "bazaar failed: {self:?}");
        self
    }
}

/// The tool pointed at one test's topics, registry, consumer groups and databases.
#[derive(Debug, Clone)]
struct Bazaar {
    global: Vec<String>,
}

impl Bazaar {
    fn new(kafka: &KafkaSettings) -> Self {
        Self {
            global: vec![
                "--bootstrap-servers".into(),
                kafka.bootstrap_servers.clone(),
                "--topic-prefix".into(),
                kafka.topic_prefix.clone(),
                "--registry".into(),
                kafka.schema_registry_url.clone(),
            ],
        }
    }

    fn for_stack(stack: &Stack) -> Self {
        let mut bazaar = Self::new(&stack.kafka);
        for (name, service) in [
            ("order", &stack.order),
            ("inventory", &stack.inventory),
            ("payment", &stack.payment),
        ] {
            bazaar.service(
                name,
                &service.settings.kafka.group_id,
                service.settings.database.url(),
            );
        }
        if let Some(fulfilment) = &stack.fulfilment {
            for (name, service) in [
                ("shipping", &fulfilment.shipping),
                ("notification", &fulfilment.notification),
            ] {
                bazaar.service(
                    name,
                    &service.settings.kafka.group_id,
                    service.settings.database.url(),
                );
            }
        }
        bazaar
    }

    fn service(&mut self, name: &str, group: &str, database_url: &str) {
        self.global.extend([
            "--service-group".into(),
            format!("{name}={group}"),
            "--service-db".into(),
            format!("{name}={database_url}"),
        ]);
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bazaar_binary());
        command
            .args(args)
            .args(&self.global)
            // No terminal: confirmations must come from --yes.
            .stdin(Stdio::null())
            .env_remove("BAZAAR__KAFKA__TOPIC_PREFIX")
            .env_remove("BAZAAR_GROUP_PREFIX");
        // As operators run it (the ops principal may move groups and redrive), unless the test
        // is about who runs it: then it names the principal, or asks the default (analyst) to
        // reveal.
        if !args
            .iter()
            .any(|arg| matches!(*arg, "--principal" | "--reveal"))
        {
            command.env("BAZAAR_PRINCIPAL", "ops");
        }
        command
    }

    async fn run(&self, args: &[&str]) -> Run {
        let mut command = self.command(args);
        let shown = format!("bazaar {}", args.join(" "));
        tokio::task::spawn_blocking(move || {
            let output = command.output().expect("bazaar runs");
            let run = Run {
                code: output.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            };
            println!("$ {shown}\n{}{}", run.stdout, run.stderr);
            run
        })
        .await
        .expect("join")
    }
}

async fn stack_with(options: StackOptions) -> Stack {
    let stack = Stack::start(options).await.expect("stack starts");
    stack.seed_demo().await.expect("demo catalog");
    stack
}

async fn order_id_of(stack: &Stack, customer: &Customer, sku: &str, token: &str) -> String {
    stack
        .checkout(customer, &[(sku, 1)], token)
        .await
        .expect("checkout")
}

/// A digest of every business table of a service database: everything but the messaging
/// runtime's tables and migration bookkeeping.
async fn business_digest(pool: &PgPool) -> BTreeSet<(String, String)> {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
            AND table_name NOT LIKE 'messaging\\_%' AND table_name NOT LIKE '\\_%'
          ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("tables");
    let mut digest = BTreeSet::new();
    for (table,) in tables {
        let (hash,): (String,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM \"{table}\" t"
        )))
        .fetch_one(pool)
        .await
        .expect("digest");
        digest.insert((table, hash));
    }
    digest
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    let (count,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.expect("count");
    count
}

// ---------------------------------------------------------------------------------------------
// Verbs and flags

#[tokio::test]
async fn every_verb_has_help_and_the_service_table_matches_the_services() {
    let bazaar = Bazaar::new(&isolated_kafka("help"));
    for verb in [
        &["--help"][..],
        &["topics", "--help"],
        &["topics", "apply", "--help"],
        &["services", "--help"],
        &["tap", "--help"],
        &["replay", "--help"],
        &["rebuild", "--help"],
        &["dlq", "--help"],
        &["dlq", "list", "--help"],
        &["dlq", "show", "--help"],
        &["dlq", "redrive", "--help"],
        &["timeline", "--help"],
        &["stuck", "--help"],
        &["wait-kafka", "--help"],
    ] {
        let run = bazaar.run(verb).await.ok();
        assert!(run.stdout.contains("Usage:"), "{verb:?}: {}", run.stdout);
    }
    let usage = bazaar.run(&["replay"]).await;
    assert_eq!(usage.code, 2, "a missing argument is a usage error");

    let services = bazaar.run(&["services", "--json"]).await.ok().json();
    let consumes = |name: &str| -> Vec<String> {
        services["services"]
            .as_array()
            .expect("services")
            .iter()
            .find(|s| s["service"] == name)
            .unwrap_or_else(|| panic!("{name} missing"))["consumes"]
            .as_array()
            .expect("consumes")
            .iter()
            .map(|t| t.as_str().expect("topic").to_owned())
            .collect()
    };
    for (name, topics) in [
        ("order", order_service::consumers::TOPICS),
        ("inventory", inventory_service::consumers::TOPICS),
        ("payment", payment_service::consumers::TOPICS),
        ("notification", notification_service::consumers::TOPICS),
        ("shipping", shipping_service::consumers::TOPICS),
        ("product", product_service::consumers::TOPICS),
    ] {
        assert_eq!(consumes(name), topics, "bazaar's table for {name}");
    }
}

// ---------------------------------------------------------------------------------------------
// tap

#[tokio::test]
async fn tap_prints_every_event_type_decoded_with_its_headers() {
    let stack = stack_with(StackOptions {
        fulfilment: true,
        ..StackOptions::default()
    })
    .await;
    let bazaar = Bazaar::for_stack(&stack);
    let customer = stack.customer();
    stack.register(&customer, "Ada").await.expect("register");
    // Paid and shipped; declined; out of stock.
    let paid = order_id_of(&stack, &customer, "TEE-BLK-M", "tok_visa").await;
    let declined = order_id_of(&stack, &customer, "CUP-ESP-GRY", "tok_chargeDeclined").await;
    let rejected = stack
        .checkout(&customer, &[("PRINT-A3-001", 2)], "tok_visa")
        .await
        .expect("checkout");
    stack
        .wait_for_status(&customer, &paid, &["shipping_scheduled"])
        .await;
    stack
        .wait_for_status(&customer, &declined, &["cancelled"])
        .await;
    stack
        .wait_for_status(&customer, &rejected, &["rejected"])
        .await;
    // What the saga does not produce on its own in a test this short, published the way a
    // service would: through an outbox and its relay.
    let publisher = Publisher::start("tap", &stack.kafka)
        .await
        .expect("publisher");
    let shipment_id = uuid::Uuid::now_v7().to_string();
    let extra: Vec<Event> = vec![
        ReservationExpired {
            order_id: declined.clone(),
        }
        .into(),
        PaymentRefunded {
            order_id: declined.clone(),
            payment_id: "pi_test".into(),
            amount_minor: 100,
            currency: "EUR".into(),
        }
        .into(),
        ShipmentDispatched {
            order_id: paid.clone(),
            shipment_id: shipment_id.clone(),
        }
        .into(),
        ShipmentDelivered {
            order_id: paid.clone(),
            shipment_id,
        }
        .into(),
    ];
    publisher.publish(&extra).await.expect("publish");

    let every_type: BTreeSet<&str> = events::SCHEMAS.iter().map(|(_, name, _)| *name).collect();
    let lines = eventually(
        "every event type in the topics",
        Duration::from_secs(60),
        || async {
            let run = bazaar.run(&["tap", "all", "--from-beginning"]).await;
            if run.code != 0 {
                return None;
            }
            let lines = run.json_lines();
            let seen: BTreeSet<&str> = lines.iter().filter_map(|l| l["type"].as_str()).collect();
            let missing: Vec<&&str> = every_type.iter().filter(|t| !seen.contains(**t)).collect();
            if missing.is_empty() {
                Some(lines)
            } else {
                println!("still missing: {missing:?}");
                None
            }
        },
    )
    .await;
    for line in &lines {
        let kind = line["type"].as_str().expect("type");
        let event = &line["event"];
        assert!(event.is_object(), "{kind} decoded: {line}");
        assert!(line["decode_error"].is_null(), "{line}");
        assert_eq!(line["headers"]["event-type"], kind);
        assert_eq!(line["headers"]["event-id"], line["event_id"]);
        assert!(
            line["headers"]["traceparent"]
                .as_str()
                .is_some_and(|t| t.contains(line["trace_id"].as_str().expect("trace id")))
        );
        assert!(line["correlation_id"].is_string() && line["occurred_at"].is_string());
        assert!(
            line["partition"].is_i64() && line["offset"].is_i64() && line["timestamp"].is_string()
        );
        // The key is the aggregate id carried in the body.
        let key = line["key"].as_str().expect("key");
        let aggregate = ["order_id", "product_id", "user_id", "sku"]
            .iter()
            .find_map(|field| event[*field].as_str())
            .expect("an aggregate id");
        assert_eq!(key, aggregate, "{line}");
    }
    // Events caused by others name their cause.
    let reserved = lines
        .iter()
        .find(|l| l["type"] == "StockReserved" && l["key"] == paid.as_str())
        .expect("StockReserved of the paid order");
    let created = lines
        .iter()
        .find(|l| l["type"] == "OrderCreated" && l["key"] == paid.as_str())
        .expect("OrderCreated of the paid order");
    assert_eq!(reserved["causation_id"], created["event_id"]);
    assert_eq!(reserved["correlation_id"], paid.as_str());
    assert_eq!(created["event"]["lines"][0]["sku"], "TEE-BLK-M");

    // Filters: one key (one partition per topic), one type, a limit, a start time.
    let only = bazaar
        .run(&[
            "tap",
            "order-events",
            "inventory-events",
            "--from-beginning",
            "--key",
            &paid,
            "--type",
            "OrderCreated,StockReserved",
        ])
        .await
        .ok()
        .json_lines();
    let types: Vec<&str> = only.iter().filter_map(|l| l["type"].as_str()).collect();
    assert_eq!(only.len(), 2, "{types:?}");
    assert!(types.contains(&"OrderCreated") && types.contains(&"StockReserved"));
    assert!(only.iter().all(|l| l["key"] == paid.as_str()));
    let limited = bazaar
        .run(&["tap", "all", "--from-beginning", "--limit", "3"])
        .await
        .ok()
        .json_lines();
    assert_eq!(limited.len(), 3);
    let recent = bazaar
        .run(&["tap", "payment-events", "--since", "10m"])
        .await
        .ok()
        .json_lines();
    assert!(recent.iter().any(|l| l["type"] == "PaymentRefunded"));
    let future = bazaar
        .run(&["tap", "payment-events", "--since", "2099-01-01T00:00:00Z"])
        .await
        .ok();
    assert!(future.stdout.trim().is_empty(), "{future:?}");

    let unknown = bazaar.run(&["tap", "orders", "--from-beginning"]).await;
    assert_eq!(unknown.code, 1);
    assert!(unknown.stderr.contains("unknown topic"), "{unknown:?}");
    let bad_type = bazaar
        .run(&[
            "tap",
            "order-events",
            "--from-beginning",
            "--type",
            "OrderShipped",
        ])
        .await;
    assert!(
        bad_type.code != 0 && bad_type.stderr.contains("OrderCreated"),
        "{bad_type:?}"
    );

    publisher.stop().await.expect("publisher stops");
    stack.stop().await.expect("clean stop");
}

/// Issue 13, part 7: personal fields (`"bazaar.pii": true` in the schemas) read as `***` in
/// `tap` and `timeline`, the raw payload included, unless the ops principal asks for `--reveal`.
#[tokio::test]
async fn tap_and_timeline_mask_personal_fields_unless_the_ops_principal_reveals_them() {
    let kafka = isolated_kafka("pii");
    messaging::topics::apply(
        &messaging::TopicCatalog::bundled().expect("catalog"),
        &kafka,
    )
    .await
    .expect("topics");
    let publisher = Publisher::start("pii", &kafka).await.expect("publisher");
    let order_id = uuid::Uuid::now_v7().to_string();
    let user_id = uuid::Uuid::now_v7().to_string();
    let personal = [
        "tok_visa_0042",
        "7 Rue des Lilas, 75001 Paris",
        "ada@example.com",
        "Ada Lovelace",
    ];
    publisher
        .publish(&[
            OrderCreated {
                order_id: order_id.clone(),
                user_id: user_id.clone(),
                lines: vec![OrderLine {
                    sku: "TEE-BLK-M".into(),
                    quantity: 1,
                    unit_price_minor: 1999,
                }],
                total_minor: 1999,
                currency: "EUR".into(),
                payment_token: personal[0].into(),
                shipping_address: personal[1].into(),
                address: None,
            }
            .into(),
            UserRegistered {
                user_id: user_id.clone(),
                email: personal[2].into(),
                display_name: personal[3].into(),
                registered_at: 1_764_000_000_000,
            }
            .into(),
        ])
        .await
        .expect("publish");
    let bazaar = Bazaar::new(&kafka);
    let tap = ["tap", "order-events", "user-events", "--from-beginning"];
    let shows_personal_data = |text: &str| personal.iter().any(|value| text.contains(value));

    let masked = eventually(
        "both events on their topics",
        Duration::from_secs(60),
        || async {
            let run = bazaar.run(&tap).await;
            (run.code == 0 && run.json_lines().len() == 2).then_some(run)
        },
    )
    .await;
    assert!(!shows_personal_data(&masked.stdout), "{masked:?}");
    let lines = masked.json_lines();
    let event = |kind: &str| {
        lines
            .iter()
            .find(|line| line["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))["event"]
            .clone()
    };
    let order = event("OrderCreated");
    assert_eq!(order["payment_token"], "***");
    assert_eq!(order["shipping_address"], "***");
    assert_eq!(
        order["order_id"],
        order_id.as_str(),
        "the rest is as published"
    );
    assert_eq!(order["lines"][0]["sku"], "TEE-BLK-M");
    let user = event("UserRegistered");
    assert_eq!(
        (&user["email"], &user["display_name"]),
        (&json!("***"), &json!("***"))
    );
    assert_eq!(user["user_id"], user_id.as_str());

    // Not the ops principal: refused, nothing printed.
    for principal in [&[][..], &["--principal", "analyst"][..]] {
        let refused = bazaar
            .run(&[&tap[..], &["--reveal"], principal].concat())
            .await;
        assert_eq!(refused.code, 3, "{refused:?}");
        assert!(refused.stderr.contains("ops principal"), "{refused:?}");
        assert!(refused.stdout.is_empty(), "{refused:?}");
    }
    let revealed = bazaar
        .run(&[&tap[..], &["--reveal", "--principal", "ops"]].concat())
        .await
        .ok();
    for value in personal {
        assert!(revealed.stdout.contains(value), "{value}: {revealed:?}");
    }

    let timeline = bazaar.run(&["timeline", &order_id, "--json"]).await.ok();
    assert!(timeline.stdout.contains("***"), "{timeline:?}");
    assert!(!shows_personal_data(&timeline.stdout), "{timeline:?}");
    let revealed = bazaar
        .command(&["timeline", &order_id, "--json", "--reveal"])
        .env("BAZAAR_PRINCIPAL", "ops")
        .output()
        .expect("bazaar runs");
    let revealed = String::from_utf8_lossy(&revealed.stdout);
    assert!(revealed.contains(personal[1]), "{revealed}");

    publisher.stop().await.expect("publisher stops");
}

// ---------------------------------------------------------------------------------------------
// replay

fn order_config(stack: &Stack) -> order_service::config::Config {
    let mut config = order_service::config::Config::defaults();
    config.service = stack.order.settings.clone();
    config.auth = stack.issuer.settings().clone();
    config
}

#[tokio::test]
async fn a_replay_reprocesses_history_and_leaves_the_state_digest_unchanged() {
    let mut stack = stack_with(StackOptions::default()).await;
    let bazaar = Bazaar::for_stack(&stack);
    let customer = stack.customer();
    let paid = order_id_of(&stack, &customer, "TEE-BLK-M", "tok_visa").await;
    let declined = order_id_of(&stack, &customer, "TOTE-NAT", "tok_chargeDeclined").await;
    stack.wait_for_status(&customer, &paid, &["paid"]).await;
    stack
        .wait_for_status(&customer, &declined, &["cancelled"])
        .await;
    let group = stack.order.settings.kafka.group_id.clone();
    wait_until_consumed(&stack.kafka, &group, order_service::consumers::TOPICS).await;
    let before = business_digest(&stack.order.pool).await;
    let inbox_before = count(&stack.order.pool, "SELECT count(*) FROM messaging_inbox").await;
    assert!(inbox_before > 0);

    // The dry run counts what would be reprocessed: all of it is in the inbox already.
    let plan = bazaar
        .run(&[
            "replay",
            "order",
            "--since",
            "beginning",
            "--dry-run",
            "--json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(plan["dry_run"], true);
    let events = plan["events"].as_i64().expect("events");
    assert!(events >= 8, "{plan}");
    assert_eq!(
        plan["already_handled"], events,
        "everything read was handled"
    );
    let types: Vec<&str> = plan["by_type"]
        .as_array()
        .expect("by type")
        .iter()
        .filter_map(|t| t["type"].as_str())
        .collect();
    for expected in [
        "ProductSnapshot",
        "StockReserved",
        "StockCommitted",
        "PaymentSucceeded",
        "PaymentFailed",
        "StockReleased",
    ] {
        assert!(types.contains(&expected), "{expected} in {types:?}");
    }
    assert!(plan["rewound_partitions"].as_i64().expect("rewound") > 0);

    // Live consumers: refused, nothing changed. No terminal and no --yes: refused too.
    let refused = bazaar
        .run(&["replay", "order", "--since", "beginning", "--yes"])
        .await;
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(refused.stderr.contains("live member"), "{refused:?}");
    stack.order.halt().await.expect("order service stops");
    let unconfirmed = bazaar
        .run(&["replay", "order", "--since", "beginning"])
        .await;
    assert_eq!(unconfirmed.code, 3, "{unconfirmed:?}");
    assert!(unconfirmed.stderr.contains("--yes"), "{unconfirmed:?}");

    // Rewind for real; once the offsets are reset, bring the service back and let it catch up.
    let mut replay = bazaar.command(&[
        "replay",
        "order",
        "--since",
        "beginning",
        "--yes",
        "--timeout",
        "120s",
    ]);
    let mut child = replay
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("replay starts");
    let stdout = child.stdout.take().expect("stdout");
    let (reset_tx, reset_rx) = tokio::sync::oneshot::channel();
    let reader = tokio::task::spawn_blocking(move || {
        let mut reset_tx = Some(reset_tx);
        let mut text = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("line");
            println!("replay> {line}");
            if line.starts_with("offsets reset")
                && let Some(tx) = reset_tx.take()
            {
                let _ = tx.send(());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    tokio::time::timeout(Duration::from_secs(60), reset_rx)
        .await
        .expect("offsets reset within 60 s")
        .expect("reset announced");
    let config = order_config(&stack);
    stack
        .order
        .restart(order_service::startup::build(config))
        .await
        .expect("order service restarts");
    let status = tokio::task::spawn_blocking(move || child.wait().expect("wait"))
        .await
        .expect("join");
    let text = reader.await.expect("reader");
    assert!(status.success(), "replay failed: {text}");
    assert!(text.contains("caught up"), "{text}");
    assert!(text.contains("the inbox grew by 0"), "{text}");

    let after = business_digest(&stack.order.pool).await;
    assert_eq!(before, after, "a replay must not change business state");
    assert_eq!(
        count(&stack.order.pool, "SELECT count(*) FROM messaging_inbox").await,
        inbox_before,
        "every replayed event was skipped by the inbox"
    );
    // Nothing more to rewind from where the group is now, except what was replayed again.
    let again = bazaar
        .run(&[
            "replay",
            "order",
            "--since",
            "2099-01-01T00:00:00Z",
            "--yes",
            "--json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(again["events"], 0);
    assert_eq!(again["rewound_partitions"], 0);
    stack.stop().await.expect("clean stop");
}

// ---------------------------------------------------------------------------------------------
// rebuild

#[tokio::test]
async fn a_rebuild_restores_the_catalog_replica_from_its_topic_and_swaps_it_in_live() {
    let stack = stack_with(StackOptions::default()).await;
    let bazaar = Bazaar::for_stack(&stack);
    let pool = &stack.order.pool;
    let replica = || async {
        sqlx::query_as::<sqlx::Postgres, (String, String, String, String, i64, String, bool)>(
            "SELECT sku, product_id, product_name, variant_name, price_minor, currency, available
               FROM catalog_replica ORDER BY sku",
        )
        .fetch_all(pool)
        .await
        .expect("replica")
    };
    let original = replica().await;
    assert!(original.len() > 3);
    let indexes = || async {
        sqlx::query_as::<sqlx::Postgres, (String,)>(
            "SELECT indexname::text FROM pg_indexes WHERE tablename = 'catalog_replica' ORDER BY 1",
        )
        .fetch_all(pool)
        .await
        .expect("indexes")
    };
    let original_indexes = indexes().await;

    // A damaged replica: a wrong price, a lost row, a row nothing published.
    sqlx::raw_sql(
        "UPDATE catalog_replica SET price_minor = 1 WHERE sku = 'TEE-BLK-M';
         DELETE FROM catalog_replica WHERE sku = 'TOTE-NAT';
         INSERT INTO catalog_replica (sku, product_id, product_name, variant_name, price_minor, currency, available)
              VALUES ('GHOST-1', 'ghost', 'Ghost', 'none', 5, 'EUR', true)",
    )
    .execute(pool)
    .await
    .expect("damage");

    let report = bazaar
        .run(&["rebuild", "order", "catalog-replica", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(report["changed"], 1, "{report}");
    assert_eq!(report["added"], 1, "{report}");
    assert_eq!(report["removed"], 1, "{report}");
    assert_eq!(report["rows_after"], original.len());
    assert!(report["snapshots_applied"].as_i64().expect("applied") > 0);
    assert_eq!(replica().await, original, "rebuilt from the snapshots");
    assert_eq!(
        indexes().await,
        original_indexes,
        "indexes keep their names"
    );
    let scratch = count(
        pool,
        "SELECT count(*) FROM pg_namespace WHERE nspname = 'bazaar_rebuild'",
    )
    .await;
    assert_eq!(scratch, 0, "no scratch schema left behind");

    // The running service sells from the swapped-in table, and keeps it up to date.
    let customer = stack.customer();
    let order_id = order_id_of(&stack, &customer, "TOTE-NAT", "tok_visa").await;
    let order = stack.wait_for_status(&customer, &order_id, &["paid"]).await;
    assert_eq!(order["items"][0]["sku"], "TOTE-NAT");

    // Keeping the old table, then the projections that cannot be rebuilt.
    let kept = bazaar
        .run(&[
            "rebuild",
            "order",
            "catalog-replica",
            "--keep-old",
            "--json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(kept["kept_old"], "catalog_replica_old");
    assert_eq!(kept["changed"], 0);
    assert_eq!(
        count(pool, "SELECT count(*) FROM catalog_replica_old").await,
        i64::try_from(original.len()).expect("len")
    );
    assert_eq!(indexes().await, original_indexes);
    let unknown = bazaar.run(&["rebuild", "order", "carts"]).await;
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("order catalog-replica"),
        "{unknown:?}"
    );
    let feed = bazaar.run(&["rebuild", "notification", "feed"]).await;
    assert_eq!(feed.code, 3, "{feed:?}");
    assert!(feed.stderr.contains("read marks"), "{feed:?}");
    stack.stop().await.expect("clean stop");
}

// ---------------------------------------------------------------------------------------------
// dlq

/// Records each OrderCancelled's step number; the reason `poison` is rejected until the `fixed`
/// table has a row, as a bug fixed by a deploy.
struct StepHandler;

impl StepHandler {
    async fn record(
        &self,
        tx: &mut PgConnection,
        received: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let Event::OrderCancelled(cancelled) = &received.event else {
            return Ok(());
        };
        let fixed: Option<(bool,)> = sqlx::query_as("SELECT fixed FROM fixed LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        if cancelled.reason == "poison" && fixed.is_none() {
            return Err(HandlerError::Rejected(anyhow::anyhow!(
                "cannot cancel with reason poison"
            )));
        }
        let step: i64 = cancelled
            .reason
            .trim_start_matches("step-")
            .parse()
            .unwrap_or(-1);
        sqlx::query("INSERT INTO effects (key, value) VALUES ($1, $2)")
            .bind(&received.key)
            .bind(step)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

impl EventHandler for StepHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[&ReceivedEvent],
    ) -> Result<(), HandlerError> {
        for received in events {
            self.record(tx, received).await?;
        }
        Ok(())
    }
}

async fn effects_of(pool: &PgPool, key: &str) -> Vec<i64> {
    sqlx::query_as::<sqlx::Postgres, (i64,)>(
        "SELECT value FROM effects WHERE key = $1 ORDER BY seq",
    )
    .bind(key)
    .fetch_all(pool)
    .await
    .expect("effects")
    .into_iter()
    .map(|(value,)| value)
    .collect()
}

fn cancel(order: &str, reason: &str) -> Event {
    OrderCancelled {
        order_id: order.into(),
        reason: reason.into(),
    }
    .into()
}

#[tokio::test]
async fn a_dlq_redrive_releases_a_parked_key_in_order() {
    bazaar_integration_tests::init_test_logging();
    // A consumer of order-events as the inventory service would run it, on a database of its
    // own; the tool knows it as the inventory service.
    let (database, pool) = fresh_messaging_database("dlq").await.expect("database");
    sqlx::raw_sql(
        "CREATE TABLE effects (seq BIGSERIAL PRIMARY KEY, key TEXT NOT NULL, value BIGINT NOT NULL);
         CREATE TABLE fixed (fixed BOOLEAN NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("tables");
    let kafka = isolated_kafka("dlq");
    messaging::topics::apply(
        &messaging::TopicCatalog::bundled().expect("catalog"),
        &kafka,
    )
    .await
    .expect("topics");
    let shutdown = CancellationToken::new();
    let relay = Relay::new(
        "test",
        pool.clone(),
        kafka.clone(),
        RelaySettings::default(),
    )
    .expect("relay");
    let relay = tokio::spawn(relay.run(shutdown.clone()));
    let consumer = IdempotentConsumer::new(
        "inventory",
        pool.clone(),
        kafka.clone(),
        ConsumerSettings::for_topics(&["order-events"]),
        StepHandler,
    );
    let consumer = tokio::spawn(consumer.run(shutdown.clone()));
    let mut bazaar = Bazaar::new(&kafka);
    bazaar.service("inventory", &kafka.group_id, database.url());
    let only = ["--service", "inventory"];

    let publisher = Publisher::start("dlq-source", &kafka)
        .await
        .expect("publisher");
    for batch in [
        vec![cancel("order-A", "step-1"), cancel("order-B", "step-1")],
        vec![cancel("order-A", "poison"), cancel("order-B", "step-2")],
        vec![cancel("order-A", "step-3")],
        vec![cancel("order-A", "step-4")],
    ] {
        publisher.publish(&batch).await.expect("publish");
    }
    eventually(
        "order-A parked behind its poison",
        Duration::from_secs(60),
        || async {
            let parked = count(&pool, "SELECT count(*) FROM messaging_parked_messages").await;
            (parked == 3 && effects_of(&pool, "order-B").await == vec![1, 2]).then_some(())
        },
    )
    .await;

    let listed = eventually(
        "the three copies in order-events.dlq",
        Duration::from_secs(30),
        || async {
            let listed = bazaar
                .run(&["dlq", "list", "--json", only[0], only[1]])
                .await
                .ok()
                .json();
            (listed["dlq_topics"][0]["messages"] == 3).then_some(listed)
        },
    )
    .await;
    let keys = listed["services"][0]["keys"]
        .as_array()
        .expect("keys")
        .clone();
    assert_eq!(keys.len(), 1, "{listed}");
    assert_eq!(keys[0]["topic"], "order-events");
    assert_eq!(keys[0]["key"], "order-A");
    assert!(keys[0]["error"].as_str().expect("error").contains("poison"));
    let ids: Vec<String> = keys[0]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|id| id.as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids[0].starts_with("inventory:"));
    let human = bazaar
        .run(&["dlq", "list", "order-events", only[0], only[1]])
        .await
        .ok();
    assert!(
        human.stdout.contains("order-A") && human.stdout.contains("poison"),
        "{human:?}"
    );
    assert!(
        human.stdout.contains("order-events.dlq: 3 dead-lettered"),
        "{human:?}"
    );

    let shown = bazaar
        .run(&["dlq", "show", &ids[0], "--json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["type"], "OrderCancelled");
    assert_eq!(shown["event"]["reason"], "poison");
    assert_eq!(shown["key_parked"], true);
    assert!(shown["error"].as_str().expect("error").contains("poison"));
    assert!(shown["headers"]["event-id"].is_string());
    let number = ids[1].trim_start_matches("inventory:");
    let by_number = bazaar
        .run(&["dlq", "show", number, "--service", "inventory"])
        .await
        .ok();
    assert!(by_number.stdout.contains("step-3"), "{by_number:?}");
    let missing = bazaar.run(&["dlq", "show", "inventory:999999"]).await;
    assert_eq!(missing.code, 6, "{missing:?}");

    // Before the fix the head fails again: the tool says so and the key stays parked.
    let early = bazaar
        .run(&[
            "dlq",
            "redrive",
            "order-events",
            "--key",
            "order-A",
            "--timeout",
            "60s",
            only[0],
            only[1],
        ])
        .await;
    assert_eq!(early.code, 1, "{early:?}");
    assert!(early.stdout.contains("still parked order-A"), "{early:?}");
    assert_eq!(effects_of(&pool, "order-A").await, vec![1]);

    // After the fix the parked messages go through in their original order.
    sqlx::query("INSERT INTO fixed VALUES (true)")
        .execute(&pool)
        .await
        .expect("fix");
    let redriven = bazaar
        .run(&[
            "dlq",
            "redrive",
            "order-events",
            "--key",
            "order-A",
            "--json",
            only[0],
            only[1],
        ])
        .await
        .ok()
        .json();
    assert_eq!(
        redriven["released"],
        json!([{"service": "inventory", "key": "order-A"}])
    );
    assert_eq!(redriven["messages"], 3);
    assert_eq!(
        effects_of(&pool, "order-A").await,
        vec![1, -1, 3, 4],
        "in order, poison in its place"
    );
    let empty = bazaar.run(&["dlq", "list", only[0], only[1]]).await.ok();
    assert!(empty.stdout.contains("no parked keys"), "{empty:?}");
    let nothing = bazaar
        .run(&["dlq", "redrive", "order-events", only[0], only[1]])
        .await;
    assert_eq!(nothing.code, 6, "{nothing:?}");

    // Later messages of the key flow directly again.
    publisher
        .publish(&[cancel("order-A", "step-5")])
        .await
        .expect("publish");
    eventually(
        "order-A's next message",
        Duration::from_secs(30),
        || async { (effects_of(&pool, "order-A").await == vec![1, -1, 3, 4, 5]).then_some(()) },
    )
    .await;
    publisher.stop().await.expect("publisher stops");
    shutdown.cancel();
    consumer.await.expect("join").expect("consumer stops");
    relay.await.expect("join").expect("relay stops");
}

// ---------------------------------------------------------------------------------------------
// timeline

#[tokio::test]
async fn a_timeline_shows_a_cancelled_and_refunded_order_in_causal_order() {
    let stack = stack_with(StackOptions::default()).await;
    let bazaar = Bazaar::for_stack(&stack);
    let customer = stack.customer();
    // The processor answers after 1.5 s, so the customer cancels while the charge is in flight.
    stack
        .set_faults(json!({ "latency_ms": 1500 }))
        .await
        .expect("faults");
    let order_id = order_id_of(&stack, &customer, "TOTE-NAT", "tok_visa").await;
    eventually("the charge to be in flight", Duration::from_secs(20), || async {
        let claimed: Option<(bool,)> = sqlx::query_as(
            "SELECT (state->>'attempted')::boolean FROM payments WHERE order_id = $1 AND lease_until > now()",
        )
        .bind(&order_id)
        .fetch_optional(&stack.payment.pool)
        .await
        .ok()?;
        claimed.filter(|(attempted,)| *attempted).map(drop)
    })
    .await;
    let cancel = stack
        .call(
            Method::POST,
            &format!("/api/orders/{order_id}/cancel"),
            Some(&customer.token),
            None,
        )
        .await
        .expect("cancel");
    assert_eq!(cancel.status, 200, "{}", cancel.body);

    let timeline = eventually(
        "the compensation to complete",
        Duration::from_secs(60),
        || async {
            let run = bazaar.run(&["timeline", &order_id, "--json"]).await;
            let timeline = (run.code == 0).then(|| run.json())?;
            let refunded = timeline["events"]
                .as_array()?
                .iter()
                .any(|e| e["type"] == "PaymentRefunded");
            (refunded && timeline["progress"]["state"] == "complete").then_some(timeline)
        },
    )
    .await;
    let events = timeline["events"].as_array().expect("events");
    let step_of = |kind: &str| -> i64 {
        events
            .iter()
            .find(|e| e["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {timeline}"))["step"]
            .as_i64()
            .expect("step")
    };
    for kind in [
        "OrderCreated",
        "StockReserved",
        "PaymentSucceeded",
        "OrderCancelled",
        "StockReleased",
        "PaymentRefunded",
    ] {
        step_of(kind);
    }
    assert_eq!(step_of("OrderCreated"), 1);
    let cause_of = |kind: &str| {
        events.iter().find(|e| e["type"] == kind).expect("event")["cause_step"].as_i64()
    };
    assert_eq!(cause_of("StockReserved"), Some(step_of("OrderCreated")));
    assert_eq!(cause_of("StockReleased"), Some(step_of("OrderCancelled")));
    assert_eq!(
        cause_of("OrderCancelled"),
        None,
        "the customer's request started it"
    );
    // Payment's worker publishes what the processor answered, outside any consumed event, so
    // its events carry no causation id: they are placed by time.
    assert_eq!(cause_of("PaymentRefunded"), None);
    assert!(step_of("PaymentRefunded") > step_of("OrderCancelled"));
    assert!(step_of("PaymentSucceeded") > step_of("StockReserved"));
    let services: HashMap<&str, &str> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().expect("type"),
                e["service"].as_str().expect("service"),
            )
        })
        .collect();
    assert_eq!(services["OrderCancelled"], "order");
    assert_eq!(services["StockReleased"], "inventory");
    assert_eq!(services["PaymentRefunded"], "payment");
    for event in events {
        if let Some(cause) = event["cause_step"].as_i64() {
            assert!(
                cause < event["step"].as_i64().expect("step"),
                "causes come first: {timeline}"
            );
            assert!(event["since_cause_ms"].is_i64());
        }
        assert_eq!(event["event"]["order_id"], order_id.as_str());
    }
    assert!(
        timeline["progress"]["message"]
            .as_str()
            .expect("message")
            .contains("refunded")
    );

    let human = bazaar.run(&["timeline", &order_id]).await.ok();
    assert!(
        human
            .stdout
            .contains("saga complete: cancelled; stock released and payment refunded"),
        "{human:?}"
    );
    assert!(human.stdout.contains("customer_request"), "{human:?}");
    let unknown = bazaar
        .run(&["timeline", &uuid::Uuid::now_v7().to_string()])
        .await;
    assert_eq!(unknown.code, 6, "{unknown:?}");
    stack.stop().await.expect("clean stop");
}

// ---------------------------------------------------------------------------------------------
// stuck, and topics with a stopped consumer

#[tokio::test]
async fn a_stuck_order_is_found_after_the_payment_service_stops() {
    let mut stack = stack_with(StackOptions::default()).await;
    let bazaar = Bazaar::for_stack(&stack);
    let customer = stack.customer();
    let done = order_id_of(&stack, &customer, "TEE-BLK-M", "tok_visa").await;
    stack.wait_for_status(&customer, &done, &["paid"]).await;

    stack.payment.halt().await.expect("payment stops");
    let stuck_id = order_id_of(&stack, &customer, "CUP-ESP-GRY", "tok_visa").await;
    eventually(
        "the stock to be reserved",
        Duration::from_secs(30),
        || async { (stack.stock("CUP-ESP-GRY").await.ok()?.1 == 1).then_some(()) },
    )
    .await;
    // `stuck --older-than 1s` lists an order once it has been in its state for a second by the
    // database clock (the one the tool reads): wait for that, cheaply, before running the tool.
    eventually(
        "the order to be pending for a second",
        Duration::from_secs(30),
        || async {
            let (old_enough,): (bool,) = sqlx::query_as(
                "SELECT coalesce(h.at, o.created_at) <= now() - interval '1 second'
                   FROM orders o
                   LEFT JOIN LATERAL (SELECT at FROM order_status_history
                                       WHERE order_id = o.id ORDER BY id DESC LIMIT 1) h ON true
                  WHERE o.id = $1::uuid AND o.status = 'pending'",
            )
            .bind(&stuck_id)
            .fetch_one(&stack.order.pool)
            .await
            .ok()?;
            old_enough.then_some(())
        },
    )
    .await;

    let found = eventually(
        "the reservation to reach the topic",
        Duration::from_secs(30),
        || async {
            let found = bazaar
                .run(&["stuck", "--older-than", "1s", "--json"])
                .await
                .ok()
                .json();
            let order = found["orders"]
                .as_array()?
                .iter()
                .find(|o| o["order_id"] == stuck_id.as_str())?
                .clone();
            (order["last_event"]["type"] == "StockReserved").then_some((found, order))
        },
    )
    .await;
    let (report, order) = found;
    assert_eq!(order["status"], "pending");
    assert_eq!(order["last_event"]["service"], "inventory");
    assert_eq!(order["last_event"]["handled_by_order"], true);
    assert_eq!(order["waiting"]["service"], "payment");
    // Paid is not final: with no shipping service in this stack, that order waits for it.
    let paid = report["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .find(|o| o["order_id"] == done.as_str())
        .expect("the paid order");
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["waiting"]["service"], "shipping");
    assert_eq!(paid["last_event"]["type"], "OrderPaid");
    assert!(
        paid["last_event"]["handled_by_order"].is_null(),
        "order does not consume its own events"
    );
    let groups = report["groups"].as_array().expect("groups");
    assert!(
        groups
            .iter()
            .any(|g| g["status"] == "pending" && g["count"].as_i64() >= Some(1))
    );

    let human = bazaar.run(&["stuck", "--older-than", "1s"]).await.ok();
    assert!(human.stdout.contains(&stuck_id), "{human:?}");
    assert!(
        human
            .stdout
            .contains("waiting for payment: StockReserved seen"),
        "{human:?}"
    );
    let none = bazaar.run(&["stuck", "--older-than", "1h"]).await.ok();
    assert!(none.stdout.contains("no stuck orders"), "{none:?}");
    let timeline = bazaar.run(&["timeline", &stuck_id]).await.ok();
    assert!(
        timeline.stdout.contains("... waiting for payment"),
        "{timeline:?}"
    );

    // The stopped payment service shows as an empty group that lags behind.
    let topics = bazaar.run(&["topics", "--json"]).await.ok().json();
    let payment_group = stack.payment.settings.kafka.group_id.clone();
    let group = topics["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["group"] == payment_group.as_str())
        .expect("payment group")
        .clone();
    assert_eq!(group["members"], 0, "{group}");
    assert!(group["lag"].as_i64() >= Some(1), "{group}");
    let order_events = topics["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .find(|t| t["topic"] == "order-events")
        .expect("order-events")
        .clone();
    assert!(order_events["end_offsets"].as_i64() >= Some(2));
    let human = bazaar.run(&["topics", "--partitions"]).await.ok();
    assert!(
        human.stdout.contains("partition 0") && human.stdout.contains(&payment_group),
        "{human:?}"
    );

    // Started again, the payment service settles the order.
    let mut config = payment_service::config::Config::defaults();
    config.service = stack.payment.settings.clone();
    config.provider.base_url = stack.payment_gateway_url.clone();
    config.workers.poll_ms = 100;
    stack
        .payment
        .restart(payment_service::startup::build(config))
        .await
        .expect("payment restarts");
    stack.wait_for_status(&customer, &stuck_id, &["paid"]).await;
    stack.stop().await.expect("clean stop");
}
