//! The catalog through the gateway: browsing with text search and cursor paging, and admin
//! changes that reach the order service's replica through ProductSnapshot events.

use bazaar_integration_tests::stack::{Stack, StackOptions};
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
        std::time::Duration::from_secs(30),
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
    bazaar_integration_tests::eventually("the archived product to be off sale", std::time::Duration::from_secs(30), || async {
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
