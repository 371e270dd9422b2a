//! One checkout is one trace: against a running Bazaar that exports spans (`make up TRACES=1`,
//! Jaeger included), a checkout sent with a `traceparent` of the test's own is followed to its
//! end, and its trace, fetched from Jaeger's query API, holds spans of every service of the saga.
//!
//! Needs that deployment: it runs when `BAZAAR_JAEGER_URL` is set (`scripts/jaeger.sh test`
//! sets it and `BAZAAR_GATEWAY_URL`), and otherwise passes at once, saying so.

use std::collections::BTreeSet;
use std::time::Duration;

use bazaar_integration_tests::eventually;
use serde_json::{Value, json};
use uuid::Uuid;

const SAGA: [&str; 6] = [
    "gateway",
    "order",
    "inventory",
    "payment",
    "shipping",
    "notification",
];

#[tokio::test]
async fn one_checkout_is_one_trace_with_spans_of_every_service() {
    let Ok(jaeger) = std::env::var("BAZAAR_JAEGER_URL") else {
        eprintln!(
            "skipped: BAZAAR_JAEGER_URL is not set (run 'make up TRACES=1' and \
             'scripts/jaeger.sh test')"
        );
        return;
    };
    let gateway =
        std::env::var("BAZAAR_GATEWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    let email = format!("traces-{}@example.com", Uuid::now_v7().simple());
    let registered = http
        .post(format!("{gateway}/api/auth/register"))
        .json(&json!({"email": email, "password": "password123", "name": "Trace"}))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status().as_u16(), 201, "register");
    let login: Value = http
        .post(format!("{gateway}/api/auth/login"))
        .json(&json!({"email": email, "password": "password123"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login body");
    let token = login["access_token"].as_str().expect("token").to_owned();

    // The demo catalog's SKUs, tried in turn until one is in stock: a rejected order never
    // reaches payment and shipping.
    let catalog: Value = serde_json::from_str(include_str!("../../../infra/demo/catalog.json"))
        .expect("the demo catalog");
    let skus: Vec<String> = catalog["products"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|product| product["variants"].as_array().cloned().unwrap_or_default())
        .filter_map(|variant| variant["sku"].as_str().map(str::to_owned))
        .collect();
    let mut shipped = None;
    for sku in &skus {
        let trace_id = Uuid::new_v4().simple().to_string();
        let traceparent = format!("00-{trace_id}-{:016x}-01", rand_span_id());
        let placed = http
            .post(format!("{gateway}/api/orders"))
            .bearer_auth(&token)
            .header("traceparent", &traceparent)
            .header("Idempotency-Key", Uuid::now_v7().to_string())
            .json(&json!({
                "items": [{"sku": sku, "quantity": 1}],
                "payment_token": "tok_visa",
                "shipping_address": "1 Trace Street",
            }))
            .send()
            .await
            .expect("checkout");
        assert_eq!(placed.status().as_u16(), 202, "checkout of {sku}");
        let order: Value = placed.json().await.expect("order");
        let order_id = order["id"].as_str().expect("order id").to_owned();
        let status = eventually("the order to be final", Duration::from_secs(60), || {
            let http = http.clone();
            let url = format!("{gateway}/api/orders/{order_id}");
            let token = token.clone();
            async move {
                let order: Value = http
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let status = order["status"].as_str()?.to_owned();
                (status != "pending" && status != "paid").then_some(status)
            }
        })
        .await;
        if status == "shipping_scheduled" {
            shipped = Some(trace_id);
            break;
        }
    }
    let trace_id = shipped.expect("no SKU of the demo catalog in stock: reseed it");

    let services = eventually(
        "the trace to hold every service",
        Duration::from_secs(30),
        || {
            let http = http.clone();
            let url = format!("{jaeger}/api/traces/{trace_id}");
            async move {
                let found: Value = http.get(url).send().await.ok()?.json().await.ok()?;
                let trace = &found["data"][0];
                let services: BTreeSet<String> = trace["processes"]
                    .as_object()?
                    .values()
                    .filter_map(|process| process["serviceName"].as_str().map(str::to_owned))
                    .collect();
                SAGA.iter()
                    .all(|service| services.contains(*service))
                    .then_some((services, trace["spans"].as_array()?.len()))
            }
        },
    )
    .await;
    eprintln!(
        "trace {trace_id}: {} span(s) from {:?}",
        services.1, services.0
    );
}

fn rand_span_id() -> u64 {
    // Any non-zero id will do; a UUIDv4's random bits are at hand.
    (Uuid::new_v4().as_u128() as u64) | 1
}
