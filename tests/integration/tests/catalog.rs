//! The catalog through the gateway: browsing with text search and cursor paging, admin changes
//! that reach the order service's replica through ProductSnapshot events, and each variant's
//! availability from inventory's stock levels, with how far it lags behind a reservation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bazaar_integration_tests::stack::{DEMO_SKUS, Stack, StackOptions};
use reqwest::Method;
use serde_json::{Value, json};

fn product(slug: &str, name: &str, price_minor: i64) -> Value {
    json!({
        "slug": slug,
        "name": name,
        "description": "A test product",
        "variants": [
            {"sku": format!("{}-S", slug.to_uppercase()), "name": "Small", "attributes": {"size": "S"}, "price_minor": price_minor, "currency": "EUR"},
            {"sku": format!("{}-L", slug.to_uppercase()), "name": "Large", "attributes": {"size": "L"}, "price_minor": price_minor + 200, "currency": "EUR"}
        ]
    })
}

#[tokio::test]
async fn browsing_pages_through_the_catalog_and_filters_by_text() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    stack.seed_demo().await.expect("demo");

    let mut names = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10 {
        let page = stack
            .call(
                Method::GET,
                &format!("/api/products?limit=3&cursor={cursor}"),
                None,
                None,
            )
            .await
            .expect("page");
        assert_eq!(page.status, 200, "{}", page.body);
        let items = page.body["items"].as_array().expect("items");
        assert!(items.len() <= 3);
        names.extend(
            items
                .iter()
                .map(|item| item["name"].as_str().unwrap_or_default().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(
        names,
        [
            "Canvas Tote Bag",
            "Classic T-Shirt",
            "Espresso Cup",
            "Limited Art Print"
        ]
    );

    let found = stack
        .call(Method::GET, "/api/products?q=cup", None, None)
        .await
        .expect("search");
    let items = found.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["variants"][0]["price_minor"], 890);
    assert_eq!(items[0]["variants"][0]["currency"], "EUR");
    let wildcard = stack
        .call(Method::GET, "/api/products?q=%25", None, None)
        .await
        .expect("search");
    assert_eq!(
        wildcard.body["items"].as_array().map(Vec::len),
        Some(0),
        "% is a literal, not a wildcard"
    );

    for bad in [
        "/api/products?limit=0",
        "/api/products?limit=1000",
        "/api/products?cursor=zz",
        "/api/products?limit=abc",
    ] {
        let answer = stack
            .call(Method::GET, bad, None, None)
            .await
            .expect("call");
        assert!(
            matches!(answer.status, 400 | 422),
            "{bad}: {} {}",
            answer.status,
            answer.body
        );
        assert!(
            answer.body["error"]["code"].is_string(),
            "{bad}: shared error shape, got {}",
            answer.body
        );
    }
    stack.stop().await.expect("stop");
}

#[tokio::test]
async fn admin_changes_reach_the_order_services_replica() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    let admin = stack.admin_token();
    let customer = stack.customer();

    let created = stack
        .call(
            Method::POST,
            "/api/admin/products",
            Some(&admin),
            Some(&product("mug", "Mug", 1500)),
        )
        .await
        .expect("create");
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    stack.wait_for_replica("MUG-S").await.expect("replica");

    let duplicate = stack
        .call(
            Method::POST,
            "/api/admin/products",
            Some(&admin),
            Some(&product("mug", "Mug", 1500)),
        )
        .await
        .expect("duplicate");
    assert_eq!(duplicate.status, 409, "{}", duplicate.body);
    let forbidden = stack
        .call(
            Method::POST,
            "/api/admin/products",
            Some(&customer.token),
            Some(&product("cup", "Cup", 1)),
        )
        .await
        .expect("customer");
    assert_eq!(forbidden.status, 403);
    for (label, body) in [
        ("negative price", product("neg", "Neg", -1)),
        ("NUL in a name", product("nul", "Nu\u{0}l", 100)),
        (
            "no variants",
            json!({"slug": "empty", "name": "Empty", "variants": []}),
        ),
    ] {
        let answer = stack
            .call(
                Method::POST,
                "/api/admin/products",
                Some(&admin),
                Some(&body),
            )
            .await
            .expect("call");
        assert_eq!(answer.status, 422, "{label}: {}", answer.body);
    }

    // A price change: the cart prices from the replica, so it follows the snapshot.
    let put = stack
        .call(
            Method::PUT,
            "/api/cart/items/MUG-S",
            Some(&customer.token),
            Some(&json!({"quantity": 2})),
        )
        .await
        .expect("cart");
    assert_eq!(put.body["total_minor"], 3000, "{}", put.body);
    let updated = stack
        .call(
            Method::PUT,
            &format!("/api/admin/products/{id}"),
            Some(&admin),
            Some(&product("mug", "Mug", 1700)),
        )
        .await
        .expect("update");
    assert_eq!(updated.status, 200, "{}", updated.body);
    bazaar_integration_tests::eventually(
        "the new price in the cart",
        Duration::from_secs(30),
        || async {
            let cart = stack
                .call(Method::GET, "/api/cart", Some(&customer.token), None)
                .await
                .ok()?;
            (cart.body["total_minor"] == 3400).then_some(())
        },
    )
    .await;

    // Archived: gone from the catalog, and no longer for sale in the order service.
    let mut archived = product("mug", "Mug", 1700);
    archived["archived"] = json!(true);
    let answer = stack
        .call(
            Method::PUT,
            &format!("/api/admin/products/{id}"),
            Some(&admin),
            Some(&archived),
        )
        .await
        .expect("archive");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let detail = stack
        .call(Method::GET, &format!("/api/products/{id}"), None, None)
        .await
        .expect("detail");
    assert_eq!(detail.status, 404);
    bazaar_integration_tests::eventually("the archived product to be off sale", Duration::from_secs(30), || async {
        let checkout = stack
            .call(
                Method::POST,
                "/api/orders",
                Some(&customer.token),
                Some(&json!({"items": [{"sku": "MUG-S", "quantity": 1}], "payment_token": "tok_visa", "shipping_address": "x"})),
            )
            .await
            .ok()?;
        (checkout.status == 422).then_some(())
    })
    .await;
    stack.stop().await.expect("stop");
}

/// Each variant's availability as the catalog shows it now, by SKU, from `path` (a page of
/// products or one product).
async fn availability(stack: &Stack, path: &str) -> BTreeMap<String, String> {
    let answer = stack
        .call(Method::GET, path, None, None)
        .await
        .expect("catalog");
    assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    let products = match answer.body.get("items") {
        Some(items) => items.as_array().cloned().unwrap_or_default(),
        None => vec![answer.body.clone()],
    };
    products
        .iter()
        .flat_map(|product| product["variants"].as_array().cloned().unwrap_or_default())
        .map(|variant| {
            (
                variant["sku"].as_str().unwrap_or_default().to_owned(),
                variant["availability"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// Waits until the whole catalog shows `sku` as `expected`.
async fn wait_for_availability(stack: &Stack, sku: &str, expected: &str) {
    bazaar_integration_tests::eventually(
        &format!("{sku} shown as {expected}"),
        Duration::from_secs(30),
        || async {
            let shown = availability(stack, "/api/products?limit=100").await;
            (shown.get(sku).map(String::as_str) == Some(expected)).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn browsing_shows_each_variants_availability_from_inventorys_stock_levels() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    stack.seed_demo().await.expect("demo");
    let admin = stack.admin_token();
    // Stocked by no one: inventory has never published a level for its SKUs.
    let created = stack
        .call(
            Method::POST,
            "/api/admin/products",
            Some(&admin),
            Some(&product("vase", "Vase", 3000)),
        )
        .await
        .expect("create");
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["variants"][0]["availability"], "unknown");

    // The demo stock with the default low-stock threshold of 5: 40, 25 and 10 units are
    // plenty, 5, 3 and 1 are low.
    for (sku, expected) in [
        ("TEE-BLK-M", "in_stock"),
        ("TEE-BLK-L", "in_stock"),
        ("TEE-WHT-M", "in_stock"),
        ("TOTE-NAT", "in_stock"),
        ("CUP-ESP-GRY", "low"),
        ("CUP-ESP-BLU", "low"),
        ("PRINT-A3-001", "low"),
    ] {
        wait_for_availability(&stack, sku, expected).await;
    }
    let everything = availability(&stack, "/api/products?limit=100").await;
    assert_eq!(
        everything.get("VASE-S").map(String::as_str),
        Some("unknown")
    );

    // Stock set by hand reaches the catalog: sold out, and back.
    stack.set_stock("TEE-WHT-M", 0).await.expect("stock");
    stack.set_stock("PRINT-A3-001", 0).await.expect("stock");
    wait_for_availability(&stack, "TEE-WHT-M", "sold_out").await;
    wait_for_availability(&stack, "PRINT-A3-001", "sold_out").await;

    // Only what is in stock: sold-out and unknown variants are left out, and so are products
    // with nothing left.
    let in_stock = availability(&stack, "/api/products?limit=100&in_stock=true").await;
    assert_eq!(
        in_stock.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "CUP-ESP-BLU",
            "CUP-ESP-GRY",
            "TEE-BLK-L",
            "TEE-BLK-M",
            "TOTE-NAT"
        ],
        "{in_stock:?}"
    );
    assert!(
        in_stock
            .values()
            .all(|shown| shown == "in_stock" || shown == "low"),
        "{in_stock:?}"
    );
    let unfiltered = availability(&stack, "/api/products?limit=100&in_stock=false").await;
    assert_eq!(unfiltered.len(), DEMO_SKUS.len() + 2, "{unfiltered:?}");

    // One product shows every variant, sold out or not.
    let tee = stack
        .call(Method::GET, "/api/products?q=classic", None, None)
        .await
        .expect("search");
    let tee_id = tee.body["items"][0]["id"].as_str().expect("id").to_owned();
    let detail = availability(&stack, &format!("/api/products/{tee_id}")).await;
    assert_eq!(
        detail.get("TEE-WHT-M").map(String::as_str),
        Some("sold_out"),
        "{detail:?}"
    );
    assert_eq!(detail.len(), 3, "{detail:?}");

    stack.set_stock("TEE-WHT-M", 6).await.expect("stock");
    wait_for_availability(&stack, "TEE-WHT-M", "in_stock").await;

    let refused = stack
        .call(Method::GET, "/api/products?in_stock=maybe", None, None)
        .await
        .expect("call");
    assert_eq!(refused.status, 400, "{}", refused.body);
    stack.stop().await.expect("stop");
}

/// How long the catalog takes to show a reservation: from the moment the reservation is
/// committed in the inventory database to the moment `GET /api/products/{id}` shows its SKU
/// sold out, for single units of stock bought one after another. Both are polled side by side
/// every 5 ms, so each figure is within about 5 ms of the truth. Run with `--nocapture` to
/// see the figures that docs/api.md quotes.
#[tokio::test]
async fn the_catalog_shows_a_reservation_within_its_documented_lag() {
    const SAMPLES: usize = 8;
    /// The lag docs/api.md promises at most, on a busy test machine.
    const DEADLINE: Duration = Duration::from_secs(2);
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    let admin = stack.admin_token();
    let skus: Vec<String> = (1..=SAMPLES).map(|n| format!("LAG-{n}")).collect();
    let variants: Vec<Value> = skus
        .iter()
        .map(|sku| json!({"sku": sku, "name": sku, "price_minor": 100, "currency": "EUR"}))
        .collect();
    let created = stack
        .call(
            Method::POST,
            "/api/admin/products",
            Some(&admin),
            Some(&json!({"slug": "lag", "name": "Lag probe", "variants": variants})),
        )
        .await
        .expect("create");
    assert_eq!(created.status, 201, "{}", created.body);
    let path = format!("/api/products/{}", created.body["id"].as_str().expect("id"));
    for sku in &skus {
        stack.set_stock(sku, 1).await.expect("stock");
        stack.wait_for_replica(sku).await.expect("replica");
    }
    for sku in &skus {
        wait_for_availability(&stack, sku, "low").await;
    }

    let customer = stack.customer();
    let mut lags = Vec::new();
    for sku in &skus {
        let order_id = stack
            .checkout(&customer, &[(sku.as_str(), 1)], "tok_visa")
            .await
            .expect("checkout");
        let reserved = first_seen(format!("{sku} reserved"), || async {
            let found: Option<(i64,)> = sqlx::query_as(
                "SELECT quantity FROM reservation_lines WHERE order_id = $1 AND sku = $2",
            )
            .bind(&order_id)
            .bind(sku)
            .fetch_optional(&stack.inventory.pool)
            .await
            .ok()?;
            found.map(drop)
        });
        let shown = first_seen(format!("{sku} sold out in the catalog"), || async {
            let shown = availability(&stack, &path).await;
            (shown.get(sku).map(String::as_str) == Some("sold_out")).then_some(())
        });
        let (reserved, shown) = tokio::join!(reserved, shown);
        lags.push(shown.saturating_duration_since(reserved));
    }
    lags.sort_unstable();
    let millis: Vec<u128> = lags.iter().map(Duration::as_millis).collect();
    println!(
        "catalog lag behind a reservation over {SAMPLES} reservations: median {} ms, max {} ms \
         (all: {millis:?} ms)",
        millis[SAMPLES / 2],
        millis[SAMPLES - 1]
    );
    assert!(
        lags.iter().all(|lag| *lag <= DEADLINE),
        "the catalog lagged more than {DEADLINE:?}: {millis:?} ms"
    );
    stack.stop().await.expect("stop");
}

/// When `probe` first yields something, polled every 5 ms for at most 30 s.
async fn first_seen<F, Fut>(what: String, mut probe: F) -> Instant
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<()>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if probe().await.is_some() {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
