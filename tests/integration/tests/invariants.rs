//! The invariant checker (`bazaar-invariants`, and `bazaar check` over it) against a whole
//! stack: a clean run of every saga outcome keeps every promise, and corrupted rows are found.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bazaar_integration_tests::eventually;
use bazaar_integration_tests::stack::{Stack, demo_catalog, demo_initial_stock};
use bazaar_invariants::{Expectations, Invariant, Outcome};
use reqwest::Method;
use serde_json::{Value, json};

/// `bazaar`, built next to this test binary (`make test` builds every binary first).
fn bazaar_binary() -> PathBuf {
    let test = std::env::current_exe().expect("test binary path");
    let binary = test
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target directory")
        .join("bazaar");
    assert!(
        binary.exists(),
        "build the CLI first: cargo build -p bazaar-cli"
    );
    binary
}

/// Runs `bazaar check --json` against the stack; returns its exit code and report.
async fn bazaar_check(stack: &Stack, extra: &[&str]) -> (i32, Value) {
    let fulfilment = stack.fulfilment();
    let mut command = Command::new(bazaar_binary());
    command
        .args(["check", "--json", "--wait", "30s"])
        .args(["--payment-gateway", &stack.payment_gateway_url])
        .arg("--initial-stock-file")
        .arg(demo_catalog())
        .arg("--mail-dir")
        .arg(&fulfilment.mail_dir)
        .args(extra);
    for (name, service) in [
        ("order", &stack.order),
        ("inventory", &stack.inventory),
        ("payment", &stack.payment),
        ("shipping", &fulfilment.shipping),
        ("notification", &fulfilment.notification),
    ] {
        command.args([
            "--service-db",
            &format!("{name}={}", service.settings.database.url()),
        ]);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("bazaar runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let report = serde_json::from_str(stdout.trim()).expect("a JSON report");
    (output.status.code().unwrap_or(-1), report)
}

#[tokio::test]
async fn every_saga_outcome_keeps_the_invariants_and_corrupted_rows_are_reported() {
    let stack = Stack::with_fulfilment().await;
    let alice = stack.customer();
    let bob = stack.customer();
    stack.register(&alice, "Alice").await.expect("alice");
    stack.register(&bob, "Bob").await.expect("bob");

    let paid = stack
        .checkout(&alice, &[("TEE-BLK-M", 2)], "tok_visa")
        .await
        .expect("paid checkout");
    let declined = stack
        .checkout(&bob, &[("CUP-ESP-GRY", 1)], "tok_chargeDeclined")
        .await
        .expect("declined checkout");
    let rejected = stack
        .checkout(&alice, &[("PRINT-A3-001", 2)], "tok_visa")
        .await
        .expect("rejected checkout");
    // Cancelled while the charge is in flight: charged, then refunded.
    stack
        .set_faults(json!({ "latency_ms": 1500 }))
        .await
        .expect("faults");
    let refunded = stack
        .checkout(&bob, &[("TOTE-NAT", 1)], "tok_visa")
        .await
        .expect("refunded checkout");
    eventually("the charge to be in flight", Duration::from_secs(20), || async {
        let claimed: Option<(bool,)> = sqlx::query_as(
            "SELECT (state->>'attempted')::boolean FROM payments WHERE order_id = $1 AND lease_until > now()",
        )
        .bind(&refunded)
        .fetch_optional(&stack.payment.pool)
        .await
        .ok()?;
        claimed.filter(|(attempted,)| *attempted).map(drop)
    })
    .await;
    let cancel = stack
        .call(
            Method::POST,
            &format!("/api/orders/{refunded}/cancel"),
            Some(&bob.token),
            None,
        )
        .await
        .expect("cancel");
    assert_eq!(cancel.status, 200, "{}", cancel.body);

    let initial_stock = demo_initial_stock();
    let expect = Expectations {
        accepted: vec![
            paid.clone(),
            declined.clone(),
            rejected.clone(),
            refunded.clone(),
        ],
        initial_stock,
        ..Expectations::default()
    };
    let checker = stack.checker();
    let report = checker
        .check_within(&expect, Duration::from_secs(60))
        .await
        .expect("sources readable");
    println!("{}", report.to_text(50));
    assert_eq!(report.outcome, Outcome::Clean, "{:#?}", report.violations);
    let statuses = &report.summary.statuses;
    assert_eq!(statuses.get("shipping_scheduled"), Some(&1));
    assert_eq!(statuses.get("cancelled/payment_declined"), Some(&1));
    assert_eq!(statuses.get("rejected/out_of_stock"), Some(&1));
    assert_eq!(statuses.get("cancelled/customer_request"), Some(&1));
    assert_eq!(
        (report.summary.charges, report.summary.refunds),
        (Some(2), Some(1))
    );
    assert_eq!(
        (report.summary.ledger_charges, report.summary.ledger_refunds),
        (Some(2), Some(1))
    );
    assert_eq!(report.summary.shipments, Some(1));
    // paid + shipment scheduled, rejected, cancelled, cancelled + refunded.
    assert_eq!(report.summary.notifications, Some(6));
    assert_eq!(report.summary.emails_sent, Some(6));
    assert_eq!(report.summary.mail_files, Some(6));

    let (code, cli) = bazaar_check(&stack, &[]).await;
    assert_eq!(code, 0, "{cli}");
    assert_eq!(cli["outcome"], "clean");
    assert_eq!(cli["summary"]["orders"], 4);

    // Corruption: a unit appears from nowhere, and the paid order is refunded behind the
    // saga's back.
    sqlx::query("UPDATE stock SET on_hand = on_hand + 1 WHERE sku = 'TEE-BLK-M'")
        .execute(&stack.inventory.pool)
        .await
        .expect("corrupt stock");
    sqlx::query(
        "INSERT INTO payment_transactions (id, order_id, kind, status, amount_minor, currency)
         VALUES (gen_random_uuid(), $1::uuid, 'refund', 'succeeded', 3998, 'EUR')",
    )
    .bind(&paid)
    .execute(&stack.payment.pool)
    .await
    .expect("corrupt payments");
    let report = checker
        .check_within(&expect, Duration::from_secs(30))
        .await
        .expect("sources readable");
    println!("{}", report.to_text(50));
    assert_eq!(report.outcome, Outcome::Violated);
    let found: Vec<(Invariant, String)> = report
        .violations
        .iter()
        .map(|v| (v.invariant, v.subject.clone()))
        .collect();
    assert_eq!(
        found,
        vec![
            (Invariant::RefundOfPaidOrder, format!("order {paid}")),
            (Invariant::StockNotConserved, "sku TEE-BLK-M".to_owned()),
        ]
    );
    assert!(
        report.rounds == 1,
        "a permanent violation ends the wait at once"
    );

    let (code, cli) = bazaar_check(&stack, &["--order", &paid, "--only-listed"]).await;
    assert_eq!(code, 1, "{cli}");
    assert_eq!(cli["outcome"], "violated");
    let codes: Vec<&str> = cli["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .filter_map(|v| v["invariant"].as_str())
        .collect();
    assert_eq!(codes, vec!["refund_of_paid_order", "stock_not_conserved"]);
    stack.stop().await.expect("clean stop");
}
