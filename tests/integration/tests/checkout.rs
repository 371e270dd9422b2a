//! The checkout saga end to end, through the services' public API, with the real Kafka broker,
//! PostgreSQL and the payment gateway simulator: every path of the choreography and its
//! compensations.

use std::time::Duration;

use bazaar_integration_tests::eventually;
use bazaar_integration_tests::proof::wait_until_handled;
use bazaar_integration_tests::stack::{Service, Stack, StackOptions};
use reqwest::Method;
use serde_json::{Value, json};

async fn stack() -> Stack {
    let stack = Stack::start(StackOptions::default())
        .await
        .expect("stack starts");
    stack.seed_demo().await.expect("demo catalog");
    stack
}

#[tokio::test]
async fn a_happy_checkout_is_paid_charged_once_and_takes_the_stock() {
    let stack = stack().await;
    let customer = stack.customer();
    let (on_hand_before, _) = stack.stock("TEE-BLK-M").await.expect("stock");

    let order_id = stack
        .checkout(&customer, &[("TEE-BLK-M", 2)], "tok_visa")
        .await
        .expect("checkout");
    let order = stack.wait_for_status(&customer, &order_id, &["paid"]).await;

    assert_eq!(order["total_minor"], 3998);
    assert_eq!(order["currency"], "EUR");
    assert_eq!(order["items"][0]["sku"], "TEE-BLK-M");
    assert_eq!(order["items"][0]["quantity"], 2);
    let stock = eventually(
        "the sale to reach on-hand stock",
        Duration::from_secs(20),
        || async {
            let stock = stack.stock("TEE-BLK-M").await.ok()?;
            (stock == (on_hand_before - 2, 0)).then_some(stock)
        },
    )
    .await;
    assert_eq!(stock, (on_hand_before - 2, 0));
    assert_eq!(stack.charges_for(&order_id).await.expect("ledger"), (1, 0));
    stack.stop().await.expect("clean stop");
}

#[tokio::test]
async fn an_order_for_more_than_is_in_stock_is_rejected_naming_the_sku() {
    let stack = stack().await;
    let customer = stack.customer();
    let order_id = stack
        .checkout(
            &customer,
            &[("TEE-BLK-M", 1), ("PRINT-A3-001", 2)],
            "tok_visa",
        )
        .await
        .expect("checkout");
    let order = stack
        .wait_for_status(&customer, &order_id, &["rejected"])
        .await;
    assert_eq!(order["reason"], "out_of_stock");
    assert_eq!(order["rejected_sku"], "PRINT-A3-001");
    assert_eq!(
        stack.stock("TEE-BLK-M").await.expect("stock"),
        (25, 0),
        "nothing reserved"
    );
    assert_eq!(stack.stock("PRINT-A3-001").await.expect("stock"), (1, 0));
    // Proof first: the payment service has handled everything said about the order, and its
    // worker has finished a round of provider calls begun after that.
    for (producer, topic) in [
        (&stack.order, "order-events"),
        (&stack.inventory, "inventory-events"),
    ] {
        wait_until_handled(&producer.pool, &stack.payment.pool, topic, &order_id).await;
    }
    stack
        .payment_worker_rounds("TEE-BLK-M")
        .await
        .expect("payment rounds");
    assert_eq!(
        stack.charges_for(&order_id).await.expect("ledger"),
        (0, 0),
        "never charged"
    );
    stack.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_declined_card_cancels_the_order_and_returns_the_stock() {
    let stack = stack().await;
    let customer = stack.customer();
    for (token, _) in [
        ("tok_chargeDeclined", "generic"),
        ("tok_chargeDeclinedInsufficientFunds", "funds"),
    ] {
        let order_id = stack
            .checkout(&customer, &[("CUP-ESP-GRY", 2)], token)
            .await
            .expect("checkout");
        let order = stack
            .wait_for_status(&customer, &order_id, &["cancelled"])
            .await;
        assert_eq!(order["reason"], "payment_declined", "{token}");
        eventually(
            "the reservation to be released",
            Duration::from_secs(20),
            || async { (stack.stock("CUP-ESP-GRY").await.ok()? == (5, 0)).then_some(()) },
        )
        .await;
        assert_eq!(stack.charges_for(&order_id).await.expect("ledger"), (0, 0));
    }
    stack.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_customer_cancel_while_the_charge_is_in_flight_is_refunded_and_restocked() {
    let stack = stack().await;
    let customer = stack.customer();
    // The processor answers after 1.5 s: the order is still pending when the customer cancels.
    stack
        .set_faults(json!({ "latency_ms": 1500 }))
        .await
        .expect("faults");
    let order_id = stack
        .checkout(&customer, &[("TOTE-NAT", 3)], "tok_visa")
        .await
        .expect("checkout");
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
    assert_eq!(
        stack.stock("TOTE-NAT").await.expect("stock"),
        (40, 3),
        "reserved while charging"
    );
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
    let order = stack
        .wait_for_status(&customer, &order_id, &["cancelled"])
        .await;
    assert_eq!(order["reason"], "customer_request");
    eventually(
        "the charge to be refunded",
        Duration::from_secs(30),
        || async { (stack.charges_for(&order_id).await.ok()? == (1, 1)).then_some(()) },
    )
    .await;
    let order = stack
        .wait_for_status(&customer, &order_id, &["cancelled"])
        .await;
    eventually(
        "the refund to be recorded on the order",
        Duration::from_secs(20),
        || async {
            let answer = stack
                .call(
                    Method::GET,
                    &format!("/api/orders/{order_id}"),
                    Some(&customer.token),
                    None,
                )
                .await
                .ok()?;
            (answer.body["refunded"] == true).then_some(())
        },
    )
    .await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(
        stack.stock("TOTE-NAT").await.expect("stock"),
        (40, 0),
        "stock conserved"
    );
    // A cancelled order cannot be cancelled again.
    let again = stack
        .call(
            Method::POST,
            &format!("/api/orders/{order_id}/cancel"),
            Some(&customer.token),
            None,
        )
        .await
        .expect("cancel again");
    assert_eq!(again.status, 409);
    stack.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_deadline_cancels_a_stuck_order_and_compensation_resolves_the_unknown_charge() {
    let stack = Stack::start(StackOptions {
        order_deadline: Duration::from_millis(1500),
        provider_timeout: Duration::from_millis(500),
        ..StackOptions::default()
    })
    .await
    .expect("stack");
    stack.seed_demo().await.expect("demo");
    let customer = stack.customer();
    // Every call to the processor times out: the charge's outcome stays unknown.
    stack
        .set_faults(json!({ "latency_ms": 2000 }))
        .await
        .expect("faults");
    let order_id = stack
        .checkout(&customer, &[("TEE-WHT-M", 1)], "tok_visa")
        .await
        .expect("checkout");
    let order = stack
        .wait_for_status(&customer, &order_id, &["cancelled"])
        .await;
    assert_eq!(order["reason"], "timeout");
    eventually(
        "the reservation to be released",
        Duration::from_secs(20),
        || async { (stack.stock("TEE-WHT-M").await.ok()? == (10, 0)).then_some(()) },
    )
    .await;
    // The processor recovers: the retried charge (same idempotency key) resolves, and whatever
    // it charged is refunded. At most one charge, and none left standing.
    stack.set_faults(json!({})).await.expect("faults cleared");
    let (charged, refunded) = eventually(
        "the charge to be resolved and compensated",
        Duration::from_secs(30),
        || async {
            let (charged, refunded) = stack.charges_for(&order_id).await.ok()?;
            let payment: Option<(String,)> =
                sqlx::query_as("SELECT charge_status FROM payments WHERE order_id = $1")
                    .bind(&order_id)
                    .fetch_optional(&stack.payment.pool)
                    .await
                    .ok()?;
            let settled = payment.is_some_and(|(status,)| status != "due");
            (settled && charged == refunded).then_some((charged, refunded))
        },
    )
    .await;
    assert!(charged <= 1, "charged {charged} times");
    assert_eq!(charged, refunded);
    stack.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_late_payment_race_ends_cancelled_refunded_and_restocked() {
    let stack = Stack::start(StackOptions {
        reservation_ttl: Duration::from_millis(800),
        provider_timeout: Duration::from_secs(5),
        ..StackOptions::default()
    })
    .await
    .expect("stack");
    stack.seed_demo().await.expect("demo");
    let customer = stack.customer();
    // The charge succeeds, but only after the reservation has expired.
    stack
        .set_faults(json!({ "latency_ms": 2000 }))
        .await
        .expect("faults");
    let order_id = stack
        .checkout(&customer, &[("CUP-ESP-BLU", 1)], "tok_visa")
        .await
        .expect("checkout");
    let order = stack
        .wait_for_status(&customer, &order_id, &["cancelled"])
        .await;
    assert_eq!(order["reason"], "timeout");
    eventually(
        "the late charge to be refunded",
        Duration::from_secs(30),
        || async { (stack.charges_for(&order_id).await.ok()? == (1, 1)).then_some(()) },
    )
    .await;
    eventually(
        "the order to record the refund",
        Duration::from_secs(20),
        || async {
            let answer = stack
                .call(
                    Method::GET,
                    &format!("/api/orders/{order_id}"),
                    Some(&customer.token),
                    None,
                )
                .await
                .ok()?;
            (answer.body["refunded"] == true && answer.body["status"] == "cancelled").then_some(())
        },
    )
    .await;
    assert_eq!(
        stack.stock("CUP-ESP-BLU").await.expect("stock"),
        (3, 0),
        "nothing sold, nothing reserved"
    );
    stack.stop().await.expect("clean stop");
}

#[tokio::test]
async fn fifty_concurrent_checkouts_for_the_last_five_units_sell_exactly_five() {
    let stack = stack().await;
    stack.set_stock("TEE-BLK-L", 5).await.expect("stock");
    let customers: Vec<_> = (0..50).map(|_| stack.customer()).collect();
    let orders = futures::future::join_all(
        customers
            .iter()
            .map(|customer| stack.checkout(customer, &[("TEE-BLK-L", 1)], "tok_visa")),
    )
    .await;
    let orders: Vec<(usize, String)> = orders
        .into_iter()
        .enumerate()
        .map(|(i, id)| (i, id.expect("every checkout is accepted")))
        .collect();
    let mut paid = 0;
    let mut rejected = 0;
    for (i, order_id) in &orders {
        let order = stack
            .wait_for_status(&customers[*i], order_id, &["paid", "rejected"])
            .await;
        match order["status"].as_str() {
            Some("paid") => paid += 1,
            Some("rejected") => {
                assert_eq!(order["reason"], "out_of_stock");
                rejected += 1;
            }
            other => panic!("unexpected status {other:?}"),
        }
    }
    assert_eq!((paid, rejected), (5, 45));
    let (on_hand, reserved) = eventually("stock to settle", Duration::from_secs(20), || async {
        let stock = stack.stock("TEE-BLK-L").await.ok()?;
        (stock.1 == 0).then_some(stock)
    })
    .await;
    // initial = available + reserved + sold
    assert_eq!((on_hand, reserved), (0, 0));
    let sold: i64 = sqlx::query_as::<sqlx::Postgres, (i64,)>(
        "SELECT coalesce(sum(l.quantity), 0)::bigint FROM reservation_lines l JOIN reservations r USING (order_id)
          WHERE r.status = 'committed' AND l.sku = 'TEE-BLK-L'",
    )
    .fetch_one(&stack.inventory.pool)
    .await
    .expect("sold")
    .0;
    assert_eq!(5, (on_hand - reserved) + reserved + sold);
    stack.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_retried_checkout_with_the_same_idempotency_key_creates_one_order() {
    let stack = stack().await;
    let customer = stack.customer();
    let body = json!({
        "items": [{"sku": "TOTE-NAT", "quantity": 1}],
        "payment_token": "tok_visa",
        "shipping_address": "1 Test Street",
    });
    let key = [("Idempotency-Key", "checkout-attempt-42")];
    let attempts = futures::future::join_all((0..5).map(|_| {
        stack.call_with(
            Method::POST,
            "/api/orders",
            Some(&customer.token),
            Some(&body),
            &key,
        )
    }))
    .await;
    let ids: Vec<Value> = attempts
        .into_iter()
        .map(|answer| {
            let answer = answer.expect("answer");
            assert_eq!(answer.status, 202, "{}", answer.body);
            answer.body["id"].clone()
        })
        .collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] == pair[1]),
        "one order id: {ids:?}"
    );
    let listed = stack
        .call(Method::GET, "/api/orders", Some(&customer.token), None)
        .await
        .expect("list");
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1));

    let changed = json!({ "items": [{"sku": "TOTE-NAT", "quantity": 2}], "payment_token": "tok_visa", "shipping_address": "1 Test Street" });
    let reused = stack
        .call_with(
            Method::POST,
            "/api/orders",
            Some(&customer.token),
            Some(&changed),
            &key,
        )
        .await
        .expect("reuse");
    assert_eq!(reused.status, 422);
    assert_eq!(reused.body["error"]["code"], "idempotency_key_reused");
    stack.stop().await.expect("clean stop");
}

#[tokio::test]
async fn customers_see_only_their_own_orders_and_carts() {
    let stack = stack().await;
    let alice = stack.customer();
    let bob = stack.customer();
    let put = stack
        .call(
            Method::PUT,
            "/api/cart/items/TEE-BLK-M",
            Some(&alice.token),
            Some(&json!({"quantity": 2})),
        )
        .await
        .expect("cart");
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.body["total_minor"], 3998);
    let bobs_cart = stack
        .call(Method::GET, "/api/cart", Some(&bob.token), None)
        .await
        .expect("cart");
    assert_eq!(bobs_cart.body["items"].as_array().map(Vec::len), Some(0));

    // Alice checks out her cart (no items in the request): the cart empties.
    let answer = stack
        .call(
            Method::POST,
            "/api/orders",
            Some(&alice.token),
            Some(&json!({"payment_token": "tok_visa", "shipping_address": "2 Elm St"})),
        )
        .await
        .expect("checkout");
    assert_eq!(answer.status, 202, "{}", answer.body);
    let order_id = answer.body["id"].as_str().expect("id").to_owned();
    let cart = stack
        .call(Method::GET, "/api/cart", Some(&alice.token), None)
        .await
        .expect("cart");
    assert_eq!(cart.body["items"].as_array().map(Vec::len), Some(0));

    for (method, path) in [
        (Method::GET, format!("/api/orders/{order_id}")),
        (Method::POST, format!("/api/orders/{order_id}/cancel")),
        (Method::GET, format!("/api/orders/{order_id}/events")),
    ] {
        let answer = stack
            .call(method.clone(), &path, Some(&bob.token), None)
            .await
            .expect("call");
        assert_eq!(answer.status, 404, "{method} {path}: {}", answer.body);
    }
    let unauthenticated = stack
        .call(Method::GET, "/api/orders", None, None)
        .await
        .expect("call");
    assert_eq!(unauthenticated.status, 401);
    let invalid = stack
        .call(Method::POST, "/api/orders", Some(&alice.token), Some(&json!({"items": [{"sku": "NOPE", "quantity": 1}], "payment_token": "tok_visa", "shipping_address": "x"})))
        .await
        .expect("call");
    assert_eq!(invalid.status, 422, "{}", invalid.body);
    assert!(
        invalid.body["error"]["fields"]["items"]
            .as_str()
            .is_some_and(|m| m.contains("NOPE"))
    );
    stack.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_status_stream_sends_each_change_as_it_happens() {
    let stack = stack().await;
    let customer = stack.customer();
    let order_id = stack
        .checkout(&customer, &[("TEE-BLK-M", 1)], "tok_visa")
        .await
        .expect("checkout");
    let mut response = stack
        .http
        .get(stack.url(&format!("/api/orders/{order_id}/events")))
        .bearer_auth(&customer.token)
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // A paid order is not final (shipping follows), so read until `paid` arrives.
    let mut text = String::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while !text.contains("\"paid\"") {
            match response.chunk().await.expect("chunk") {
                Some(chunk) => text.push_str(&String::from_utf8_lossy(&chunk)),
                None => break,
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no paid status within 30 s: {text}");
    let statuses: Vec<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|event| event["status"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        statuses,
        vec!["pending".to_owned(), "paid".to_owned()],
        "{text}"
    );
    assert!(text.contains("event: status"), "{text}");
    stack.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_customers_orders_come_newest_first_a_page_at_a_time() {
    let stack = stack().await;
    let customer = stack.customer();
    let mut placed = Vec::new();
    for _ in 0..3 {
        placed.push(
            stack
                .checkout(&customer, &[("TOTE-NAT", 1)], "tok_visa")
                .await
                .expect("checkout"),
        );
    }
    let list = |path: String, token: String| {
        let stack = &stack;
        async move {
            stack
                .call(Method::GET, &path, Some(&token), None)
                .await
                .expect("list")
        }
    };
    let ids = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|order| order["id"].as_str().map(str::to_owned))
            .collect()
    };

    let first = list("/api/orders?limit=2".into(), customer.token.clone()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(ids(&first.body), [placed[2].clone(), placed[1].clone()]);
    assert_eq!(first.body["next"], placed[1].as_str(), "{}", first.body);
    let second = list(
        format!("/api/orders?limit=2&before={}", placed[1]),
        customer.token.clone(),
    )
    .await;
    assert_eq!(ids(&second.body), [placed[0].clone()]);
    assert!(
        second.body["next"].is_null(),
        "the last page: {}",
        second.body
    );
    let everything = list("/api/orders".into(), customer.token.clone()).await;
    assert_eq!(
        ids(&everything.body),
        placed.iter().rev().cloned().collect::<Vec<_>>()
    );

    // Another customer's order is no place to start from, and limits are checked.
    let stranger = stack.customer();
    let theirs = list(
        format!("/api/orders?before={}", placed[2]),
        stranger.token.clone(),
    )
    .await;
    assert_eq!(ids(&theirs.body), Vec::<String>::new());
    for bad in ["limit=0", "limit=101"] {
        let answer = list(format!("/api/orders?{bad}"), customer.token.clone()).await;
        assert_eq!(answer.status, 422, "{bad}: {}", answer.body);
    }
    let answer = list(
        "/api/orders?before=yesterday".into(),
        customer.token.clone(),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    stack.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_new_order_stream_past_the_limit_closes_the_oldest_and_idle_ones_close() {
    let stack = stack().await;
    // An order instance with a small limit and a short idle bound, called directly.
    let mut config = stack.order_config.clone();
    config.streams.max_per_user = 2;
    config.streams.idle_timeout_ms = 1_500;
    let order = Service::start(order_service::startup::build(config))
        .await
        .expect("order instance");
    let customer = stack.customer();
    let order_id = stack
        .checkout(&customer, &[("TOTE-NAT", 1)], "tok_visa")
        .await
        .expect("checkout");
    // Paid is not final without shipping, so each stream stays open until it idles.
    stack.wait_for_status(&customer, &order_id, &["paid"]).await;
    let url = format!("{}/orders/{order_id}/events", order.base_url);
    let open = |token: String| {
        let request = stack.http.get(&url).bearer_auth(token);
        async move { request.send().await.expect("the stream answers") }
    };
    // The whole of a stream the server ends, which sent the order's history up to `paid`.
    let read_to_its_end = |stream: reqwest::Response, why_ended: &'static str| async move {
        let text = tokio::time::timeout(Duration::from_secs(20), stream.text())
            .await
            .expect(why_ended)
            .expect("the stream's text");
        assert!(text.contains("\"paid\""), "{text}");
    };

    let first = open(customer.token.clone()).await;
    let second = open(customer.token.clone()).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    // A third is one too many: it is served, and the oldest is closed in its favour, long
    // before the idle bound would have closed it.
    let opened = std::time::Instant::now();
    let third = open(customer.token.clone()).await;
    assert_eq!(third.status(), 200, "the newest stream is served");
    read_to_its_end(first, "the oldest stream is closed").await;
    assert!(
        opened.elapsed() < Duration::from_millis(1_000),
        "closed for the newer stream, not for idling: {:?}",
        opened.elapsed()
    );
    // The limit is per customer: someone else's stream displaces none of these (a 404: not
    // their order).
    let stranger = open(stack.customer().token).await;
    assert_eq!(stranger.status(), 404);

    // With no change for the idle bound, the server ends the other two (each read returns).
    for stream in [second, third] {
        read_to_its_end(stream, "an idle stream is closed by the server").await;
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(1_000),
        "closed for idling, not at once: {:?}",
        opened.elapsed()
    );
    // Their places are given back.
    let again = open(customer.token.clone()).await;
    assert_eq!(again.status(), 200);
    drop(again);
    order.stop().await.expect("instance stops");
    stack.stop().await.expect("clean stop");
}
