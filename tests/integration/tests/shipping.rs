//! What follows a payment, end to end through the public API with the real Kafka broker and
//! PostgreSQL: the shipping service schedules one shipment per paid order, the order shows it
//! and follows an admin's dispatch and delivery, and the customer is notified of each step
//! once, however often the events arrive.

use std::time::{Duration, Instant};

use bazaar_integration_tests::eventually;
use bazaar_integration_tests::offsets::wait_until_consumed;
use bazaar_integration_tests::proof::{is_marker_mail, mail_sender_rounds};
use bazaar_integration_tests::stack::{Customer, Stack};
use chrono::Utc;
use events::{EventMetadata, OrderPaid};
use reqwest::Method;
use serde_json::Value;
use shipping_rules::{is_valid_tracking_number, next_business_day};

async fn order(stack: &Stack, customer: &Customer, order_id: &str) -> Value {
    let answer = stack
        .call(
            Method::GET,
            &format!("/api/orders/{order_id}"),
            Some(&customer.token),
            None,
        )
        .await
        .expect("order");
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

async fn wait_for_shipment_status(
    stack: &Stack,
    customer: &Customer,
    order_id: &str,
    status: &str,
) -> Value {
    eventually(
        &format!("the order to show a {status} shipment"),
        Duration::from_secs(30),
        || async {
            let body = order(stack, customer, order_id).await;
            (body["shipment"]["status"] == status).then_some(body)
        },
    )
    .await
}

async fn admin(stack: &Stack, step: &str, order_id: &str, token: &str) -> (u16, Value) {
    let answer = stack
        .call(
            Method::POST,
            &format!("/api/admin/shipments/{order_id}/{step}"),
            Some(token),
            None,
        )
        .await
        .expect("admin call");
    (answer.status, answer.body)
}

/// (event type, count) of what the shipping service published.
async fn shipping_events(stack: &Stack, event_type: &str) -> i64 {
    let (count,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM messaging_outbox WHERE event_type = $1")
            .bind(event_type)
            .fetch_one(&stack.fulfilment().shipping.pool)
            .await
            .expect("outbox");
    count
}

/// The e-mails written, but the markers of [`mail_sender_rounds`].
fn eml_count(stack: &Stack) -> usize {
    std::fs::read_dir(&stack.fulfilment().mail_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| entry.file_name().to_string_lossy().ends_with(".eml"))
                .filter(|entry| {
                    !std::fs::read_to_string(entry.path()).is_ok_and(|text| is_marker_mail(&text))
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_paid_order_gets_one_shipment_that_the_order_and_the_customer_follow_to_delivery() {
    let stack = Stack::with_fulfilment().await;
    let customer = stack.customer();
    stack
        .register(&customer, "Erin Example")
        .await
        .expect("registered");
    let admin_token = stack.admin_token();

    let started = Instant::now();
    let order_id = stack
        .checkout(&customer, &[("TEE-BLK-M", 2)], "tok_visa")
        .await
        .expect("checkout");
    stack
        .wait_for_status(&customer, &order_id, &["paid", "shipping_scheduled"])
        .await;
    let paid_after = started.elapsed();
    let body = stack
        .wait_for_status(&customer, &order_id, &["shipping_scheduled"])
        .await;
    let scheduled_after = started.elapsed();
    println!(
        "checkout → paid seen after {paid_after:?}, → shipping_scheduled seen after {scheduled_after:?}"
    );

    // The order shows its shipment: two items go by letterbox parcel, picked up on the next
    // business day after payment.
    let shipment = eventually("shipment details", Duration::from_secs(20), || async {
        let body = order(&stack, &customer, &order_id).await;
        body["shipment"]["carrier"]
            .is_string()
            .then(|| body["shipment"].clone())
    })
    .await;
    assert_eq!(body["status"], "shipping_scheduled");
    assert_eq!(shipment["status"], "scheduled");
    assert_eq!(shipment["carrier"], "Bazaar Post");
    let tracking = shipment["tracking_number"].as_str().expect("tracking");
    assert!(is_valid_tracking_number(tracking), "{tracking}");
    let today = Utc::now().date_naive();
    let pickup: chrono::NaiveDate = shipment["pickup_date"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("pickup date");
    let yesterday = today.pred_opt().expect("yesterday");
    assert!(
        [next_business_day(today), next_business_day(yesterday)].contains(&pickup),
        "{pickup}"
    );
    assert!(shipment["dispatched_at"].is_null());
    let (listed, _) = {
        let answer = stack
            .call(Method::GET, "/api/orders", Some(&customer.token), None)
            .await
            .expect("list");
        (
            answer.body["items"][0]["shipment"]["tracking_number"].clone(),
            answer.status,
        )
    };
    assert_eq!(listed, tracking, "the order list shows the shipment too");

    // Only admins move shipments.
    let (status, body) = admin(&stack, "dispatch", &order_id, &customer.token).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &Value::from("forbidden"))
    );
    let (status, body) = admin(&stack, "deliver", &order_id, &admin_token).await;
    assert_eq!(status, 409, "no delivery before dispatch: {body}");

    let (status, body) = admin(&stack, "dispatch", &order_id, &admin_token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "dispatched");
    assert_eq!(body["tracking_number"], tracking);
    let (status, again) = admin(&stack, "dispatch", &order_id, &admin_token).await;
    assert_eq!(
        (status, &again["status"]),
        (200, &Value::from("dispatched")),
        "a retry is fine"
    );
    let body = wait_for_shipment_status(&stack, &customer, &order_id, "dispatched").await;
    assert!(body["shipment"]["dispatched_at"].is_string());
    // The order moves on with its shipment, in the same transaction.
    assert_eq!(body["status"], "shipped", "the order is shipped");

    let (status, body) = admin(&stack, "deliver", &order_id, &admin_token).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &Value::from("delivered")),
        "{body}"
    );
    let body = wait_for_shipment_status(&stack, &customer, &order_id, "delivered").await;
    assert!(body["shipment"]["delivered_at"].is_string());
    assert_eq!(body["status"], "delivered", "the order is delivered");
    // The order's event stream replays its whole timeline, then ends: delivered is final.
    let timeline = tokio::time::timeout(Duration::from_secs(30), async {
        stack
            .http
            .get(stack.url(&format!("/api/orders/{order_id}/events")))
            .bearer_auth(&customer.token)
            .send()
            .await
            .expect("the order's event stream")
            .text()
            .await
            .expect("the stream's text")
    })
    .await
    .expect("the stream of a delivered order ends");
    let statuses: Vec<String> = timeline
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|change| change["status"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        statuses,
        [
            "pending",
            "paid",
            "shipping_scheduled",
            "shipped",
            "delivered"
        ],
        "{timeline}"
    );
    let (status, body) = admin(&stack, "dispatch", &order_id, &admin_token).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &Value::from("conflict")),
        "never back"
    );
    let (status, _) = admin(
        &stack,
        "deliver",
        &uuid::Uuid::now_v7().to_string(),
        &admin_token,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = admin(&stack, "deliver", "not-an-order", &admin_token).await;
    assert_eq!(status, 404);
    let admin_view = stack
        .call(
            Method::GET,
            &format!("/api/admin/shipments/{order_id}"),
            Some(&admin_token),
            None,
        )
        .await
        .expect("admin view");
    assert_eq!(
        admin_view.body["shipping_address"],
        "Test Shopper, 1 Test Street, 12345 Springfield, DE"
    );
    assert_eq!(admin_view.body["country"], "DE");
    assert_eq!(admin_view.body["item_count"], 2);

    // The customer heard of each step once, in the feed and by e-mail.
    let feed = eventually("four notifications", Duration::from_secs(30), || async {
        let answer = stack
            .call(
                Method::GET,
                "/api/notifications",
                Some(&customer.token),
                None,
            )
            .await
            .ok()?;
        let items = answer.body["items"].as_array()?.clone();
        (items.len() >= 4).then_some(answer.body)
    })
    .await;
    let kinds: Vec<&str> = feed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "shipment_delivered",
            "shipment_dispatched",
            "shipment_scheduled",
            "order_paid"
        ]
    );
    assert_eq!(feed["unread"], 4);
    eventually("four e-mails", Duration::from_secs(30), || async {
        (eml_count(&stack) == 4).then_some(())
    })
    .await;

    // OrderPaid again: once more byte for byte (a relay that lost its acknowledgement), and
    // once under a new event id (a replayed flow). Still one shipment, one event, one notice.
    sqlx::query("UPDATE messaging_outbox SET published_at = NULL WHERE event_type = 'OrderPaid'")
        .execute(&stack.order.pool)
        .await
        .expect("republish");
    let mut tx = stack.order.pool.begin().await.expect("begin");
    let again = events::Event::from(OrderPaid {
        order_id: order_id.clone(),
    });
    messaging::outbox::append(
        &mut tx,
        &again,
        &EventMetadata::originating("OrderPaid", order_id.clone(), None),
    )
    .await
    .expect("append");
    tx.commit().await.expect("commit");
    eventually(
        "the order relay to publish",
        Duration::from_secs(20),
        || async {
            let (pending,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM messaging_outbox WHERE published_at IS NULL")
                    .fetch_one(&stack.order.pool)
                    .await
                    .ok()?;
            (pending == 0).then_some(())
        },
    )
    .await;
    for service in ["shipping", "notification"] {
        wait_until_consumed(
            &stack.kafka,
            &format!("{}-{service}", stack.kafka.group_id),
            &["order-events"],
        )
        .await;
    }
    // Both consumers are past the duplicates; the mail sender has worked through what was due.
    mail_sender_rounds(&stack.fulfilment().notification.pool)
        .await
        .expect("mail sender rounds");
    let (shipments,): (i64,) = sqlx::query_as("SELECT count(*) FROM shipments")
        .fetch_one(&stack.fulfilment().shipping.pool)
        .await
        .expect("shipments");
    assert_eq!(shipments, 1);
    assert_eq!(shipping_events(&stack, "ShipmentScheduled").await, 1);
    assert_eq!(shipping_events(&stack, "ShipmentDispatched").await, 1);
    assert_eq!(shipping_events(&stack, "ShipmentDelivered").await, 1);
    let answer = stack
        .call(
            Method::GET,
            "/api/notifications",
            Some(&customer.token),
            None,
        )
        .await
        .expect("feed");
    assert_eq!(answer.body["items"].as_array().map(Vec::len), Some(4));
    assert_eq!(eml_count(&stack), 4);

    // A bigger parcel goes by another carrier; a declined order is never shipped.
    let other = stack.customer();
    let large = stack
        .checkout(&other, &[("TOTE-NAT", 4), ("TEE-BLK-M", 1)], "tok_visa")
        .await
        .expect("checkout");
    let declined = stack
        .checkout(&other, &[("TOTE-NAT", 1)], "tok_chargeDeclined")
        .await
        .expect("checkout");
    let body = wait_for_shipment_status(&stack, &other, &large, "scheduled").await;
    assert_eq!(body["shipment"]["carrier"], "Bazaar Parcel");
    let body = stack
        .wait_for_status(&other, &declined, &["cancelled"])
        .await;
    assert!(body["shipment"].is_null(), "{body}");
    wait_until_consumed(
        &stack.kafka,
        &format!("{}-shipping", stack.kafka.group_id),
        &["order-events"],
    )
    .await;
    let (shipments,): (i64,) = sqlx::query_as("SELECT count(*) FROM shipments")
        .fetch_one(&stack.fulfilment().shipping.pool)
        .await
        .expect("shipments");
    assert_eq!(shipments, 2);

    stack.stop().await.expect("clean stop");
}
