//! Hostile input through the gateway: forged tokens, other users' resources, SQL-shaped and
//! oversized values, invalid UTF-8 and absurd JSON. Every answer is a clear 4xx in the shared
//! error shape, never a 5xx, and nothing is stored.

use bazaar_integration_tests::stack::{Stack, StackOptions};
use reqwest::Method;
use serde_json::json;

async fn orders_of(stack: &Stack, user: uuid::Uuid) -> i64 {
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders WHERE user_id = $1")
        .bind(user)
        .fetch_one(&stack.order.pool)
        .await
        .expect("count");
    count
}

#[tokio::test]
async fn hostile_input_gets_a_clear_4xx_and_stores_nothing() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    stack.seed_demo().await.expect("demo");
    let customer = stack.customer();
    let token = Some(customer.token.as_str());

    // Forged tokens on every kind of customer route.
    for forged in
        stack
            .issuer
            .forged_tokens_for(customer.user_id, "mallory@example.com", &["customer"])
    {
        for (method, path) in [
            (Method::GET, "/api/cart"),
            (Method::GET, "/api/orders"),
            (Method::POST, "/api/orders"),
        ] {
            let answer = stack
                .call(method.clone(), path, Some(&forged.1), Some(&json!({})))
                .await
                .expect("call");
            assert_eq!(
                answer.status, 401,
                "{} {method} {path}: {}",
                forged.0, answer.body
            );
        }
    }

    let injection = "x'; DROP TABLE orders; --";
    let cases = [
        (
            Method::GET,
            format!("/api/products?q={}", urlencode(injection)),
            None,
        ),
        (
            Method::PUT,
            format!("/api/cart/items/{}", urlencode(injection)),
            Some(json!({"quantity": 1})),
        ),
        (
            Method::PUT,
            "/api/cart/items/TEE-BLK-M".to_owned(),
            Some(json!({"quantity": "1 OR 1=1"})),
        ),
        (
            Method::PUT,
            "/api/cart/items/TEE-BLK-M".to_owned(),
            Some(json!({"quantity": 1_000_000})),
        ),
        (
            Method::POST,
            "/api/orders".to_owned(),
            Some(
                json!({"items": [{"sku": injection, "quantity": 1}], "payment_token": "tok_visa", "shipping_address": "x"}),
            ),
        ),
        (
            Method::POST,
            "/api/orders".to_owned(),
            Some(
                json!({"items": [{"sku": "TEE-BLK-M", "quantity": 1}], "payment_token": "tok_visa", "shipping_address": "y".repeat(10_000)}),
            ),
        ),
        (
            Method::POST,
            "/api/orders".to_owned(),
            Some(
                json!({"items": [{"sku": "TEE-BLK-M", "quantity": 1}], "payment_token": "tok\u{0}visa", "shipping_address": "z"}),
            ),
        ),
        (
            Method::GET,
            format!("/api/orders/{}", urlencode(injection)),
            None,
        ),
    ];
    for (method, path, body) in &cases {
        let answer = stack
            .call(method.clone(), path, token, body.as_ref())
            .await
            .expect("call");
        if path.starts_with("/api/products?q=") {
            assert_eq!(
                answer.status, 200,
                "{path}: a search for odd text is just a search"
            );
            assert_eq!(answer.body["items"].as_array().map(Vec::len), Some(0));
            continue;
        }
        assert!(
            (400..500).contains(&answer.status),
            "{method} {path}: {} {}",
            answer.status,
            answer.body
        );
        assert!(
            answer.body["error"]["code"].is_string(),
            "{method} {path}: shared shape, got {}",
            answer.body
        );
    }

    // Raw bodies: invalid UTF-8, a JSON bomb of nesting, and one over the size limit.
    let raw_bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "invalid UTF-8",
            b"{\"payment_token\": \"\xff\xfe\", \"shipping_address\": \"a\"}".to_vec(),
        ),
        (
            "deep nesting",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        ),
        (
            "oversized",
            format!(
                "{{\"payment_token\":\"tok_visa\",\"shipping_address\":\"{}\"}}",
                "a".repeat(3 * 1024 * 1024)
            )
            .into_bytes(),
        ),
        ("not JSON", b"payment_token=tok_visa".to_vec()),
    ];
    for (label, body) in raw_bodies {
        let answer = stack
            .http
            .post(stack.url("/api/orders"))
            .bearer_auth(&customer.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        let status = answer.status().as_u16();
        assert!((400..500).contains(&status), "{label}: {status}");
    }

    assert_eq!(
        orders_of(&stack, customer.user_id).await,
        0,
        "nothing was stored"
    );
    let cart = stack
        .call(Method::GET, "/api/cart", token, None)
        .await
        .expect("cart");
    assert_eq!(
        cart.body["items"].as_array().map(Vec::len),
        Some(0),
        "nothing in the cart"
    );
    stack.stop().await.expect("stop");
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
