//! The structured shipping address (OrderCreated v3), end to end with the real Kafka broker,
//! PostgreSQL and schema registry: the API checks it field by field and still takes the
//! deprecated free text, shipping abroad goes international, and a topic holding OrderCreated
//! written with v2 (by an order service not yet upgraded) and v3 is consumed, and rebuilt from
//! scratch, alike.

use std::time::Duration;

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use bazaar_integration_tests::publisher::Publisher;
use bazaar_integration_tests::stack::{Service, Stack, home_address, service_settings};
use bazaar_integration_tests::{eventually, fresh_database, isolated_kafka};
use chrono::{NaiveDate, Utc};
use events::{Event, EventMetadata, OrderCreated, OrderLine, OrderPaid, PostalAddress};
use messaging::registry::SchemaRegistryClient;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::Method;
use serde_json::{Value, json};
use shipping_rules::{Destination, next_business_day, pickup_date};
use uuid::Uuid;

fn address_in(country: &str) -> Value {
    json!({
        "name": "Marie Curie",
        "line1": "11 Rue Pierre et Marie Curie",
        "line2": "  ",
        "city": "Paris",
        "postal_code": "75005",
        "country": country,
    })
}

async fn shipment_of(stack: &Stack, token: &str, order_id: &str) -> Value {
    eventually(
        "the order to show its shipment",
        Duration::from_secs(30),
        || async {
            let answer = stack
                .call(
                    Method::GET,
                    &format!("/api/orders/{order_id}"),
                    Some(token),
                    None,
                )
                .await
                .expect("order");
            (answer.body["shipment"].is_object()).then_some(answer.body)
        },
    )
    .await
}

#[tokio::test]
async fn a_postal_address_is_checked_field_by_field_and_a_parcel_abroad_goes_international() {
    let stack = Stack::with_fulfilment().await;
    let customer = stack.customer();

    // Every wrong field is named, under shipping_address.
    let refused = stack
        .call(
            Method::POST,
            "/api/orders",
            Some(&customer.token),
            Some(&json!({
                "items": [{"sku": "TOTE-NAT", "quantity": 1}],
                "payment_token": "tok_visa",
                "shipping_address": {
                    "name": "Marie Curie", "line1": "", "city": "Paris",
                    "postal_code": "75005; --", "country": "XX"
                },
            })),
        )
        .await
        .expect("checkout");
    assert_eq!(refused.status, 422, "{}", refused.body);
    let fields = &refused.body["error"]["fields"];
    for field in ["line1", "postal_code", "country"] {
        assert!(
            fields[format!("shipping_address.{field}")].is_string(),
            "{field}: {}",
            refused.body
        );
    }
    assert!(
        fields["shipping_address.name"].is_null(),
        "{}",
        refused.body
    );
    assert!(
        fields["shipping_address.country"]
            .as_str()
            .is_some_and(|message| message.contains("ISO 3166-1 alpha-2")),
        "{}",
        refused.body
    );

    // Abroad (lower case is fine): international, a business day later than at home.
    let abroad = stack
        .checkout_to(&customer, &[("TOTE-NAT", 1)], "tok_visa", address_in("fr"))
        .await
        .expect("checkout abroad");
    let at_home = stack
        .checkout(&customer, &[("TOTE-NAT", 1)], "tok_visa")
        .await
        .expect("checkout at home");
    let abroad = shipment_of(&stack, &customer.token, &abroad).await;
    assert_eq!(abroad["address"]["country"], "FR", "{abroad}");
    assert!(
        abroad["address"]["line2"].is_null(),
        "a blank line is no line: {abroad}"
    );
    assert_eq!(
        abroad["shipping_address"],
        "Marie Curie, 11 Rue Pierre et Marie Curie, 75005 Paris, FR"
    );
    let shipment = &abroad["shipment"];
    assert_eq!(shipment["carrier"], "Bazaar International", "{shipment}");
    assert!(
        shipment["tracking_number"]
            .as_str()
            .is_some_and(|number| number.starts_with("BI")),
        "{shipment}"
    );
    // Paid today (UTC; a test run across midnight would see either day).
    let today = Utc::now().date_naive();
    let pickup: NaiveDate = shipment["pickup_date"]
        .as_str()
        .and_then(|day| day.parse().ok())
        .expect("a pick-up date");
    assert!(
        [today, today.pred_opt().expect("yesterday")]
            .into_iter()
            .any(|paid| pickup == pickup_date(paid, Destination::International)),
        "pick-up {pickup} is not the second business day after {today}"
    );
    let at_home = shipment_of(&stack, &customer.token, &at_home).await;
    assert_eq!(at_home["shipment"]["carrier"], "Bazaar Post", "{at_home}");
    assert_eq!(at_home["address"]["country"], "DE");
    stack.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_free_text_address_is_still_taken_with_a_deprecation_notice_and_ships_at_home() {
    let stack = Stack::with_fulfilment().await;
    let customer = stack.customer();
    let answer = stack
        .http
        .post(stack.url("/api/orders"))
        .bearer_auth(&customer.token)
        .json(&json!({
            "items": [{"sku": "TOTE-NAT", "quantity": 1}],
            "payment_token": "tok_visa",
            "shipping_address": "1 Test Street\n12345 Springfield",
        }))
        .send()
        .await
        .expect("checkout");
    assert_eq!(answer.status(), 202);
    assert_eq!(answer.headers()["deprecation"], "@1796515200");
    assert!(
        answer.headers().contains_key("sunset"),
        "{:?}",
        answer.headers()
    );
    let body: Value = answer.json().await.expect("json");
    let order_id = body["id"].as_str().expect("id").to_owned();
    let order = shipment_of(&stack, &customer.token, &order_id).await;
    assert!(order["address"].is_null(), "{order}");
    assert_eq!(
        order["shipping_address"],
        "1 Test Street\n12345 Springfield"
    );
    assert_eq!(order["shipment"]["carrier"], "Bazaar Post");

    // A postal address answers without the notice; blank free text is refused.
    let answer = stack
        .http
        .post(stack.url("/api/orders"))
        .bearer_auth(&customer.token)
        .json(&json!({
            "items": [{"sku": "TOTE-NAT", "quantity": 1}],
            "payment_token": "tok_visa",
            "shipping_address": home_address(),
        }))
        .send()
        .await
        .expect("checkout");
    assert_eq!(answer.status(), 202);
    assert!(!answer.headers().contains_key("deprecation"));
    let blank = stack
        .call(
            Method::POST,
            "/api/orders",
            Some(&customer.token),
            Some(&json!({
                "items": [{"sku": "TOTE-NAT", "quantity": 1}],
                "payment_token": "tok_visa",
                "shipping_address": "   ",
            })),
        )
        .await
        .expect("checkout");
    assert_eq!(blank.status, 422, "{}", blank.body);
    assert!(blank.body["error"]["fields"]["shipping_address"].is_string());
    stack.stop().await.expect("clean stop");
}

/// OrderCreated v2 (a free-text address only), as the union an order service built before v3
/// registers: the topic's current union with OrderCreated's branch at version 2.
fn union_with_order_created_v2() -> (String, usize) {
    let v2 = include_str!("../../../schemas/avro/order-events/OrderCreated/v2.avsc");
    let members: Vec<&str> = events::types::SCHEMAS
        .iter()
        .filter(|(topic, _, _)| *topic == "order-events")
        .map(|(_, name, text)| if *name == "OrderCreated" { v2 } else { text })
        .map(str::trim)
        .collect();
    let branch = events::types::SCHEMAS
        .iter()
        .filter(|(topic, _, _)| *topic == "order-events")
        .position(|(_, name, _)| *name == "OrderCreated")
        .expect("OrderCreated is on order-events");
    (format!("[{}]", members.join(",")), branch)
}

/// Publishes `order` encoded with OrderCreated v2, framed with the registry's id for that
/// union, as an order service not yet upgraded would.
async fn publish_as_v2(kafka: &platform::config::KafkaSettings, order: &OrderCreated) {
    let (text, branch) = union_with_order_created_v2();
    let topic = kafka.topic("order-events");
    let id = SchemaRegistryClient::of(kafka)
        .register(&format!("{topic}-value"), &text)
        .await
        .expect("the registry takes v2 back: BACKWARD compatible with v3");
    let union = Schema::parse_str(&text).expect("union");
    let lines = order
        .lines
        .iter()
        .map(|line| {
            Avro::Record(vec![
                ("sku".into(), Avro::String(line.sku.clone())),
                ("quantity".into(), Avro::Int(line.quantity)),
                ("unit_price_minor".into(), Avro::Long(line.unit_price_minor)),
            ])
        })
        .collect();
    let record = Avro::Record(vec![
        ("order_id".into(), Avro::String(order.order_id.clone())),
        ("user_id".into(), Avro::String(order.user_id.clone())),
        ("lines".into(), Avro::Array(lines)),
        ("total_minor".into(), Avro::Long(order.total_minor)),
        ("currency".into(), Avro::String(order.currency.clone())),
        (
            "payment_token".into(),
            Avro::String(order.payment_token.clone()),
        ),
        (
            "shipping_address".into(),
            Avro::String(order.shipping_address.clone()),
        ),
    ]);
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&union)
        .build()
        .expect("writer")
        .write_value_to_vec(Avro::Union(
            u32::try_from(branch).expect("branch"),
            Box::new(record),
        ))
        .expect("a v2 datum");
    let metadata = EventMetadata::originating("OrderCreated", &order.order_id, None);
    let mut headers = OwnedHeaders::new();
    for (name, value) in metadata.to_headers() {
        headers = headers.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    let producer: FutureProducer = messaging::client::base_config(kafka)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    let payload = events::wire::frame(id, &datum);
    producer
        .send(
            FutureRecord::to(&topic)
                .key(&order.order_id)
                .payload(&payload)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error)
        .expect("a v2 record on the topic");
}

fn order_created(address: Option<PostalAddress>) -> OrderCreated {
    OrderCreated {
        order_id: Uuid::now_v7().to_string(),
        user_id: Uuid::now_v7().to_string(),
        lines: vec![OrderLine {
            sku: "TEE-BLK-M".into(),
            quantity: 1,
            unit_price_minor: 1999,
        }],
        total_minor: 1999,
        currency: "EUR".into(),
        payment_token: "tok_visa".into(),
        shipping_address: address.as_ref().map_or_else(
            || "1 Old Street, 12345 Springfield".to_owned(),
            PostalAddress::one_line,
        ),
        address: address.map(Box::new),
    }
}

/// (order id, carrier, pick-up, country) of every shipment a shipping service planned.
async fn plans(shipping: &Service) -> Vec<(String, String, NaiveDate, Option<String>)> {
    let mut rows: Vec<(Uuid, String, NaiveDate, Option<String>)> = sqlx::query_as(
        "SELECT order_id, carrier, pickup_date, country FROM shipments ORDER BY order_id",
    )
    .fetch_all(&shipping.pool)
    .await
    .expect("shipments");
    rows.sort();
    rows.into_iter()
        .map(|(order, carrier, pickup, country)| (order.to_string(), carrier, pickup, country))
        .collect()
}

/// [`plans`] once a shipping service has planned both of the test's orders.
async fn both_planned_by(shipping: &Service) -> Vec<(String, String, NaiveDate, Option<String>)> {
    eventually(
        "both orders to be shipped",
        Duration::from_secs(30),
        || async {
            let planned = plans(shipping).await;
            (planned.len() == 2).then_some(planned)
        },
    )
    .await
}

async fn shipping_service(kafka: &platform::config::KafkaSettings) -> Service {
    let settings = service_settings(
        fresh_database("shipping").await.expect("database"),
        kafka.clone(),
    );
    Service::start(shipping_service::startup::build(
        shipping_service::config::Config {
            service: settings,
            ..shipping_service::config::Config::defaults()
        },
    ))
    .await
    .expect("shipping service")
}

#[tokio::test]
async fn a_topic_holding_order_created_v2_and_v3_ships_both_and_rebuilds_alike() {
    let kafka = isolated_kafka("shipping");
    messaging::topics::apply(
        &messaging::TopicCatalog::bundled().expect("catalog"),
        &kafka,
    )
    .await
    .expect("topics");
    let publisher = Publisher::start("addresses", &kafka)
        .await
        .expect("publisher");
    let shipping = shipping_service(&kafka).await;

    // One order from before v3, one after it, going abroad.
    let old = order_created(None);
    publish_as_v2(&kafka, &old).await;
    let new = order_created(Some(PostalAddress {
        name: "Marie Curie".into(),
        line1: "11 Rue Pierre et Marie Curie".into(),
        line2: None,
        city: "Paris".into(),
        postal_code: "75005".into(),
        country: "FR".into(),
    }));
    let events: Vec<Event> = vec![
        new.clone().into(),
        OrderPaid {
            order_id: old.order_id.clone(),
        }
        .into(),
        OrderPaid {
            order_id: new.order_id.clone(),
        }
        .into(),
    ];
    let sent = publisher.publish(&events).await.expect("published");
    let paid_on = sent[1].occurred_at.date_naive();

    let expected = {
        let mut expected = vec![
            (
                old.order_id.clone(),
                "Bazaar Post".to_owned(),
                next_business_day(paid_on),
                None,
            ),
            (
                new.order_id.clone(),
                "Bazaar International".to_owned(),
                pickup_date(paid_on, Destination::International),
                Some("FR".to_owned()),
            ),
        ];
        expected.sort();
        expected
    };
    let planned = both_planned_by(&shipping).await;
    assert_eq!(planned, expected);

    // Rebuilt from the topic by a shipping service with an empty database and a group of its
    // own: the same plans, whichever version wrote each order.
    let rebuilt = shipping_service(&platform::config::KafkaSettings {
        group_id: format!("{}-rebuild", kafka.group_id),
        ..kafka.clone()
    })
    .await;
    let replanned = both_planned_by(&rebuilt).await;
    assert_eq!(replanned, expected);
    rebuilt.stop().await.expect("clean stop");
    shipping.stop().await.expect("clean stop");
    publisher.stop().await.expect("publisher stops");
}
