//! Two instances of every saga service on one database and one consumer group each, as
//! `make cluster` runs them (issue 12): the instances share each group's partitions, and every
//! background worker (the payment provider calls, the mail sender, the order deadlines and the
//! reservation expiry) does each piece of work once while both instances race for it. The
//! invariant checker ends the test: one charge per paid order, every refund matched, stock
//! conserved, one shipment and one e-mail per notice.

use std::time::Duration;

use bazaar_integration_tests::fresh_database;
use bazaar_integration_tests::groups::wait_until_shared;
use bazaar_integration_tests::stack::{
    Customer, Service, Stack, StackOptions, demo_initial_stock, service_settings,
};
use bazaar_invariants::{Expectations, Outcome};
use futures::future::try_join_all;
use serde_json::json;

const INSTANCES: usize = 2;

/// `count` checkouts of one unit of `sku` with `token`, placed at the same time.
async fn checkouts(
    stack: &Stack,
    customer: &Customer,
    count: usize,
    sku: &str,
    token: &str,
) -> Vec<String> {
    let items = [(sku, 1)];
    try_join_all((0..count).map(|_| stack.checkout(customer, &items, token)))
        .await
        .expect("checkouts accepted")
}

#[tokio::test]
async fn two_instances_of_every_service_share_the_work_and_do_each_piece_once() {
    let stack = Stack::start(StackOptions {
        fulfilment: true,
        instances: INSTANCES,
        // Long enough for a healthy saga on a loaded test machine, short enough to wait for.
        order_deadline: Duration::from_secs(6),
        provider_timeout: Duration::from_millis(500),
        ..StackOptions::default()
    })
    .await
    .expect("stack starts");
    stack.seed_demo().await.expect("demo catalog");
    let customer = stack.customer();
    stack.register(&customer, "Grace").await.expect("register");

    // Every consuming service's group has both instances, each holding partitions.
    let fulfilment = stack.fulfilment();
    for service in [
        &stack.order,
        &stack.inventory,
        &stack.payment,
        &fulfilment.shipping,
        &fulfilment.notification,
    ] {
        let group = &service.settings.kafka.group_id;
        let shares =
            wait_until_shared(&stack.kafka, group, INSTANCES, Duration::from_secs(60)).await;
        println!("{group}: partitions per instance {shares:?}");
    }

    // Paid and declined: the payment worker's claims, the mail sender's, the consumers'.
    let mut accepted = checkouts(&stack, &customer, 12, "TEE-BLK-M", "tok_visa").await;
    accepted.extend(checkouts(&stack, &customer, 4, "CUP-ESP-GRY", "tok_chargeDeclined").await);
    for order_id in &accepted {
        stack
            .wait_for_status(&customer, order_id, &["shipping_scheduled", "cancelled"])
            .await;
    }

    // Stuck: every provider call outlasts the deadline, so both order instances' deadline
    // workers race to cancel the same orders, and both payment instances to resolve the
    // unknown charges once the provider is back.
    stack
        .set_faults(json!({ "latency_ms": 10_000 }))
        .await
        .expect("faults");
    let stuck = checkouts(&stack, &customer, 4, "TOTE-NAT", "tok_visa").await;
    for order_id in &stuck {
        let order = stack
            .wait_for_status(&customer, order_id, &["cancelled"])
            .await;
        assert_eq!(order["reason"], "timeout", "{order}");
    }
    stack.set_faults(json!({})).await.expect("faults cleared");
    accepted.extend(stuck);

    let expect = Expectations {
        accepted: accepted.clone(),
        initial_stock: demo_initial_stock(),
        ..Expectations::default()
    };
    let report = stack
        .checker()
        .check_within(&expect, Duration::from_secs(90))
        .await
        .expect("sources readable");
    println!("{}", report.to_text(50));
    assert_eq!(report.outcome, Outcome::Clean, "{:#?}", report.violations);
    let statuses = &report.summary.statuses;
    assert_eq!(
        statuses.get("shipping_scheduled"),
        Some(&12),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.get("cancelled/payment_declined"),
        Some(&4),
        "{statuses:?}"
    );
    assert_eq!(statuses.get("cancelled/timeout"), Some(&4), "{statuses:?}");
    assert_eq!(report.summary.shipments, Some(12));
    // Each paid order charged once; a stuck one charged at most once and then refunded.
    let (charges, refunds) = (
        report.summary.ledger_charges.unwrap_or_default(),
        report.summary.ledger_refunds.unwrap_or_default(),
    );
    assert!(
        (12..=16).contains(&charges) && charges - refunds == 12,
        "charges {charges}, refunds {refunds}"
    );
    // Notices: 12 paid, 4 declined, 4 timed out; each mailed once (the checker's exactly-once
    // rule compares the outbox of mails with the files).
    assert_eq!(
        report.summary.mail_files, report.summary.notifications,
        "one e-mail per notice"
    );
    stack.stop().await.expect("clean stop");
}

/// `make cluster` starts both instances of a service at once on a new database: the migrations
/// (the service's and the messaging runtime's, two bookkeeping tables under one advisory lock)
/// must let every instance start.
#[tokio::test]
async fn instances_started_at_once_on_a_new_database_all_migrate() {
    bazaar_integration_tests::init_test_logging();
    let kafka = bazaar_integration_tests::isolated_kafka("instances");
    let catalog = messaging::TopicCatalog::bundled().expect("topic catalog");
    messaging::topics::apply(&catalog, &kafka)
        .await
        .expect("topics");
    let settings = service_settings(
        fresh_database("instances-auth").await.expect("database"),
        kafka.clone(),
    );
    let auth = (0..3).map(|_| {
        let mut config = auth_service::config::Config::defaults();
        config.service = settings.clone();
        Service::start(auth_service::startup::build(config))
    });
    let settings = service_settings(
        fresh_database("instances-order").await.expect("database"),
        kafka,
    );
    let order = (0..3).map(|_| {
        let mut config = order_service::config::Config::defaults();
        config.service = settings.clone();
        Service::start(order_service::startup::build(config))
    });
    let (auth, order) = futures::join!(try_join_all(auth), try_join_all(order));
    for service in auth.expect("every auth instance starts") {
        service.stop().await.expect("stops");
    }
    for service in order.expect("every order instance starts") {
        service.stop().await.expect("stops");
    }
}
