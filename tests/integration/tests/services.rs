//! Every service starts against its own fresh database and the real broker, migrates, and
//! reports health and readiness; the gateway serves the storefront and forwards the catalog.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use bazaar_integration_tests::{eventually, fresh_database, isolated_kafka};
use platform::app::Application;
use platform::config::{HttpSettings, LogSettings, ServiceSettings};
use serde_json::Value;

fn settings_for(service: &str, database: platform::config::DatabaseSettings) -> ServiceSettings {
    ServiceSettings {
        http: HttpSettings {
            host: "127.0.0.1".into(),
            port: 0,
            keep_alive_ms: HttpSettings::DEFAULT_KEEP_ALIVE_MS,
        },
        database,
        kafka: isolated_kafka(service),
        log: LogSettings::default(),
    }
}

struct Running {
    base_url: String,
    pool: sqlx::PgPool,
    stop: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.stop.stop(true).await;
        let outcome = tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("service stops within 15 s after a graceful stop")
            .expect("service task did not panic");
        outcome.expect("service shut down cleanly");
    }
}

async fn start(app: impl Future<Output = anyhow::Result<Application>>) -> Running {
    let app = app.await.expect("service starts");
    Running {
        base_url: format!("http://127.0.0.1:{}", app.port()),
        pool: app.pool().clone(),
        stop: app.stop_handle(),
        task: tokio::spawn(app.run_until_stopped()),
    }
}

async fn spawn(service: &str) -> Running {
    let database = fresh_database(service).await.expect("fresh database");
    let settings = settings_for(service, database);
    match service {
        "auth" => {
            start(auth_service::startup::build(auth_service::config::Config {
                service: settings,
                ..auth_service::config::Config::defaults()
            }))
            .await
        }
        "product" => {
            start(product_service::startup::build(
                product_service::config::Config {
                    service: settings,
                    ..product_service::config::Config::defaults()
                },
            ))
            .await
        }
        "order" => {
            start(order_service::startup::build(
                order_service::config::Config {
                    service: settings,
                    ..order_service::config::Config::defaults()
                },
            ))
            .await
        }
        "inventory" => {
            start(inventory_service::startup::build(
                inventory_service::config::Config {
                    service: settings,
                    ..inventory_service::config::Config::defaults()
                },
            ))
            .await
        }
        "payment" => {
            start(payment_service::startup::build(
                payment_service::config::Config {
                    service: settings,
                    ..payment_service::config::Config::defaults()
                },
            ))
            .await
        }
        "notification" => {
            start(notification_service::startup::build(
                notification_service::config::Config {
                    service: settings,
                    ..notification_service::config::Config::defaults()
                },
            ))
            .await
        }
        "shipping" => {
            start(shipping_service::startup::build(
                shipping_service::config::Config {
                    service: settings,
                    ..shipping_service::config::Config::defaults()
                },
            ))
            .await
        }
        other => panic!("unknown service {other}"),
    }
}

async fn get_json(url: &str) -> (u16, Value) {
    let answer = reqwest::get(url)
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    let status = answer.status().as_u16();
    let body = answer.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn every_service_migrates_its_database_and_reports_ready() {
    for service in [
        "auth",
        "product",
        "order",
        "inventory",
        "payment",
        "notification",
        "shipping",
    ] {
        let running = spawn(service).await;

        let (status, body) = get_json(&format!("{}/healthz", running.base_url)).await;
        assert_eq!(
            (status, &body["status"]),
            (200, &Value::from("alive")),
            "{service} /healthz"
        );

        let (status, body) = get_json(&format!("{}/readyz", running.base_url)).await;
        assert_eq!(status, 200, "{service} /readyz: {body}");
        assert_eq!(body["checks"]["database"], "ok", "{service}");
        assert_eq!(body["checks"]["kafka"], "ok", "{service}");

        let (applied,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&running.pool)
                .await
                .expect("migrations table");
        assert!(applied >= 1, "{service}: migrations applied");

        let (status, body) = get_json(&format!("{}/no/such/route", running.base_url)).await;
        assert_eq!(status, 404, "{service}");
        assert_eq!(
            body["error"]["code"], "not_found",
            "{service}: shared error shape, got {body}"
        );

        running.stop().await;
    }
}

#[tokio::test]
async fn readiness_fails_when_kafka_is_unreachable() {
    let database = fresh_database("order").await.expect("fresh database");
    let mut settings = settings_for("order", database);
    // Nothing listens on port 1.
    settings.kafka.bootstrap_servers = "127.0.0.1:1".into();
    let running = start(order_service::startup::build(
        order_service::config::Config {
            service: settings,
            ..order_service::config::Config::defaults()
        },
    ))
    .await;

    let (status, body) = get_json(&format!("{}/readyz", running.base_url)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["kafka"], "unavailable");
    assert_eq!(body["checks"]["database"], "ok");
    let (status, _) = get_json(&format!("{}/healthz", running.base_url)).await;
    assert_eq!(status, 200, "alive even when not ready");
    running.stop().await;
}

#[tokio::test]
async fn the_gateway_serves_the_storefront_and_the_seeded_catalog() {
    let product = spawn("product").await;
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/demo/catalog.json");
    let loaded = product_service::seed::seed_demo_catalog(&product.pool, &demo)
        .await
        .expect("seed");
    assert_eq!(loaded, 4);
    // Seeding twice changes nothing.
    product_service::seed::seed_demo_catalog(&product.pool, &demo)
        .await
        .expect("seed again");

    let mut config = gateway::config::Config::defaults();
    config.http.port = 0;
    config.upstreams.product = product.base_url.clone();
    // No order service runs in this test: its port is closed.
    config.upstreams.order = "http://127.0.0.1:1".into();
    let gateway = gateway::startup::build(config).expect("gateway starts");
    let base = format!("http://127.0.0.1:{}", gateway.port);
    let gateway_stop = gateway.server.handle();
    let gateway_task = tokio::spawn(gateway.server);

    let page = reqwest::get(format!("{base}/"))
        .await
        .expect("storefront")
        .text()
        .await
        .expect("html");
    assert!(page.contains("<title>Bazaar</title>"));

    let (status, body) = get_json(&format!("{base}/api/products")).await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 4);
    let print = items
        .iter()
        .find(|item| item["slug"] == "limited-print")
        .expect("limited print");
    assert_eq!(print["variants"][0]["sku"], "PRINT-A3-001");
    assert_eq!(print["variants"][0]["price_minor"], 4500);
    assert_eq!(print["variants"][0]["currency"], "EUR");

    let id = print["id"].as_str().expect("id");
    let (status, detail) = get_json(&format!("{base}/api/products/{id}")).await;
    assert_eq!(
        (status, &detail["name"]),
        (200, &Value::from("Limited Art Print"))
    );
    let (status, missing) = get_json(&format!("{base}/api/products/not-a-uuid")).await;
    assert_eq!(
        (status, &missing["error"]["code"]),
        (404, &Value::from("not_found"))
    );

    // Readiness names the upstream that is down.
    let (status, ready) = eventually(
        "gateway readiness to report",
        Duration::from_secs(10),
        || async {
            let (status, body) = get_json(&format!("{base}/readyz")).await;
            (status != 0).then_some((status, body))
        },
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(ready["checks"]["order"], "unavailable");
    assert_eq!(ready["checks"]["product"], "ok");

    gateway_stop.stop(true).await;
    gateway_task
        .await
        .expect("gateway task")
        .expect("gateway stopped cleanly");
    product.stop().await;
}

#[tokio::test]
async fn the_gateway_answers_502_in_the_shared_shape_when_a_service_is_down() {
    let mut config = gateway::config::Config::defaults();
    config.http.port = 0;
    config.upstreams.product = "http://127.0.0.1:1".into();
    let gateway = gateway::startup::build(config).expect("gateway starts");
    let base = format!("http://127.0.0.1:{}", gateway.port);
    let stop = gateway.server.handle();
    let task = tokio::spawn(gateway.server);

    let (status, body) = get_json(&format!("{base}/api/products")).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "no internal detail leaks: {body}"
    );

    stop.stop(true).await;
    task.await
        .expect("gateway task")
        .expect("gateway stopped cleanly");
}
