//! The OpenAPI document of the public API (`/api/openapi.json`) and Swagger UI (`/api/docs/`).
//!
//! The gateway owns the public contract, so the document lives here rather than in the
//! services. The functions below exist only to carry `#[utoipa::path]` attributes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use platform::http::ApiError;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

/// The shared error answer.
#[derive(ToSchema)]
struct Error {
    error: ErrorDetail,
}

#[derive(ToSchema)]
struct ErrorDetail {
    /// Machine-readable, e.g. `not_found`, `validation_failed`, `unauthorized`.
    #[schema(example = "not_found")]
    code: String,
    message: String,
    /// On 422: what is wrong with each field.
    #[schema(required = false)]
    fields: Option<BTreeMap<String, String>>,
}

#[derive(ToSchema)]
struct RegisterRequest {
    /// Unique regardless of case.
    #[schema(
        example = "ada@example.com",
        max_length = 254,
        pattern = r"^[A-Za-z0-9._%+-]{1,64}@([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$"
    )]
    email: String,
    /// 8 to 128 characters, not only spaces, not the e-mail address.
    #[schema(
        example = "correct horse battery",
        min_length = 8,
        max_length = 128,
        pattern = r"\S"
    )]
    password: String,
    /// The display name; no control characters.
    #[schema(
        example = "Ada Lovelace",
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    name: String,
}

#[derive(ToSchema)]
struct Account {
    id: uuid::Uuid,
    email: String,
    name: String,
}

#[derive(ToSchema)]
struct LoginRequest {
    #[schema(
        example = "ada@example.com",
        min_length = 1,
        max_length = 254,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*\S[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    email: String,
    #[schema(example = "correct horse battery", min_length = 1)]
    password: String,
}

#[derive(ToSchema)]
struct TokenPair {
    /// A JWT (EdDSA) to send as `Authorization: Bearer <token>`.
    access_token: String,
    /// Single use: exchange it at `/api/auth/refresh` for a new pair.
    refresh_token: String,
    #[schema(example = "Bearer")]
    token_type: String,
    /// Seconds until the access token expires.
    #[schema(example = 900)]
    expires_in: u64,
}

#[derive(ToSchema)]
struct RefreshRequest {
    #[schema(min_length = 1, pattern = r"\S")]
    refresh_token: String,
}

#[derive(ToSchema)]
struct LogoutRequest {
    /// The session to end; without it, every session of the user ends.
    #[schema(required = false)]
    refresh_token: Option<String>,
}

#[derive(ToSchema)]
struct Me {
    id: uuid::Uuid,
    email: String,
    name: String,
    #[schema(example = json!(["customer"]))]
    roles: Vec<String>,
}

/// RFC 7517 key set; every key is an Ed25519 public key (`kty: OKP`, `crv: Ed25519`).
#[derive(ToSchema)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(ToSchema)]
struct Jwk {
    #[schema(example = "OKP")]
    kty: String,
    #[schema(example = "Ed25519")]
    crv: String,
    x: String,
    kid: String,
    #[schema(example = "EdDSA")]
    alg: String,
    #[schema(example = "sig", rename = "use")]
    usage: String,
}

#[derive(ToSchema)]
struct Variant {
    #[schema(example = "TEE-BLK-M")]
    sku: String,
    name: String,
    #[schema(example = json!({"size": "M", "colour": "black"}))]
    attributes: BTreeMap<String, String>,
    /// Integer minor units (cents).
    #[schema(example = 1999)]
    price_minor: i64,
    #[schema(example = "EUR")]
    currency: String,
}

#[derive(ToSchema)]
struct Product {
    id: uuid::Uuid,
    slug: String,
    name: String,
    description: String,
    variants: Vec<Variant>,
}

#[derive(ToSchema)]
struct ProductPage {
    items: Vec<Product>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[schema(required = false)]
    next_cursor: Option<String>,
}

#[derive(ToSchema)]
struct VariantDraft {
    #[schema(pattern = r"^[A-Z0-9-]{1,64}$", example = "TEE-BLK-M")]
    sku: String,
    #[schema(pattern = r"\S")]
    name: String,
    #[schema(required = false)]
    attributes: Option<BTreeMap<String, String>>,
    #[schema(minimum = 0)]
    price_minor: i64,
    #[schema(pattern = r"^[A-Z]{3}$", example = "EUR")]
    currency: String,
}

#[derive(ToSchema)]
struct ProductDraft {
    #[schema(pattern = r"\S", example = "classic-tee")]
    slug: String,
    #[schema(pattern = r"\S")]
    name: String,
    #[schema(required = false)]
    description: Option<String>,
    #[schema(min_items = 1)]
    variants: Vec<VariantDraft>,
}

#[derive(ToSchema)]
struct CartItem {
    sku: String,
    name: String,
    quantity: i32,
    unit_price_minor: i64,
    currency: String,
    /// False when the SKU is no longer sold; such lines do not count towards the total.
    available: bool,
    line_total_minor: i64,
}

#[derive(ToSchema)]
struct Cart {
    items: Vec<CartItem>,
    total_minor: i64,
    currency: Option<String>,
}

#[derive(ToSchema)]
struct CartQuantity {
    #[schema(minimum = 1, maximum = 100, example = 2)]
    quantity: i32,
}

#[derive(ToSchema)]
struct CheckoutLine {
    #[schema(pattern = r"^[A-Z0-9-]{1,64}$", example = "TEE-BLK-M")]
    sku: String,
    #[schema(minimum = 1, maximum = 100)]
    quantity: i32,
}

#[derive(ToSchema)]
struct CheckoutRequest {
    /// Omit to check out the cart.
    #[schema(required = false, min_items = 1)]
    items: Option<Vec<CheckoutLine>>,
    /// Test tokens: `tok_visa` succeeds, `tok_chargeDeclined` and
    /// `tok_chargeDeclinedInsufficientFunds` decline.
    #[schema(example = "tok_visa", pattern = r"\S")]
    payment_token: String,
    #[schema(max_length = 500, pattern = r"\S")]
    shipping_address: String,
}

#[derive(ToSchema)]
struct OrderAccepted {
    id: uuid::Uuid,
    #[schema(example = "pending")]
    status: String,
}

#[derive(ToSchema)]
struct OrderLine {
    sku: String,
    quantity: i32,
    unit_price_minor: i64,
}

#[derive(ToSchema)]
struct Order {
    id: uuid::Uuid,
    /// `pending`, `paid`, `shipping_scheduled`, `rejected` or `cancelled`.
    status: String,
    /// Why an order was rejected or cancelled: `out_of_stock`, `payment_declined`, `timeout`,
    /// `customer_request`.
    #[schema(required = false)]
    reason: Option<String>,
    items: Vec<OrderLine>,
    total_minor: i64,
    currency: String,
    created_at: String,
    updated_at: String,
    /// Null until the shipping service has scheduled the shipment.
    shipment: Option<OrderShipment>,
}

#[derive(ToSchema)]
struct OrderShipment {
    shipment_id: String,
    #[schema(example = "Bazaar Post")]
    carrier: Option<String>,
    #[schema(example = "BP313403501569")]
    tracking_number: Option<String>,
    #[schema(example = "2026-11-27")]
    pickup_date: Option<String>,
    /// `scheduled`, `dispatched` or `delivered`; it only moves forward.
    status: String,
    dispatched_at: Option<String>,
    delivered_at: Option<String>,
    updated_at: String,
}

#[derive(ToSchema)]
struct Notification {
    id: uuid::Uuid,
    /// `order_paid`, `order_rejected`, `order_cancelled`, `payment_refunded`,
    /// `shipment_scheduled`, `shipment_dispatched` or `shipment_delivered`.
    kind: String,
    order_id: Option<uuid::Uuid>,
    subject: String,
    body: String,
    read: bool,
    read_at: Option<String>,
    /// When the event it tells of happened.
    created_at: String,
}

#[derive(ToSchema)]
struct NotificationFeed {
    /// Newest first.
    items: Vec<Notification>,
    /// Unread notifications of the caller, all of them (not only this page).
    unread: i64,
}

#[derive(ToSchema)]
struct Shipment {
    id: uuid::Uuid,
    order_id: uuid::Uuid,
    carrier: String,
    tracking_number: String,
    pickup_date: String,
    /// `scheduled`, `dispatched` or `delivered`.
    status: String,
    shipping_address: String,
    item_count: i32,
    created_at: String,
    dispatched_at: Option<String>,
    delivered_at: Option<String>,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
enum ShipmentStatusFilter {
    Scheduled,
    Dispatched,
    Delivered,
}

#[derive(ToSchema)]
struct ShipmentList {
    items: Vec<Shipment>,
}

#[derive(ToSchema)]
struct OrderList {
    items: Vec<Order>,
}

#[derive(ToSchema)]
struct SetStock {
    #[schema(minimum = 0, example = 25)]
    on_hand: i64,
}

#[derive(ToSchema)]
struct StockLevel {
    sku: String,
    on_hand: i64,
    reserved: i64,
}

#[utoipa::path(post, path = "/api/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = Account),
        (status = 409, description = "The e-mail address is taken", body = Error),
        (status = 413, description = "Body too large", body = Error),
        (status = 415, description = "Not JSON", body = Error),
        (status = 422, description = "Invalid fields", body = Error),
    ))]
fn register() {}

#[utoipa::path(post, path = "/api/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenPair),
        (status = 401, description = "Wrong e-mail address or password (the same answer for both)", body = Error),
        (status = 413, description = "Body too large", body = Error),
        (status = 415, description = "Not JSON", body = Error),
        (status = 422, description = "Missing fields", body = Error),
        (status = 429, description = "Too many attempts for this account or address",
            body = Error, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
fn login() {}

#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new pair; the presented refresh token is spent", body = TokenPair),
        (status = 401, description = "Unknown, expired, revoked or already used refresh token", body = Error),
        (status = 413, description = "Body too large", body = Error),
        (status = 415, description = "Not JSON", body = Error),
        (status = 422, description = "Missing refresh_token", body = Error),
    ))]
fn refresh() {}

#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    request_body(content = Option<LogoutRequest>, description = "Optional", content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "No valid access token", body = Error),
        (status = 413, description = "Body too large", body = Error),
        (status = 422, description = "Not a logout request", body = Error),
    ))]
fn logout() {}

#[utoipa::path(get, path = "/api/auth/me", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's account", body = Me),
        (status = 401, description = "No valid access token", body = Error),
    ))]
fn me() {}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses(
        (status = 200, description = "The public keys access tokens are signed with",
            body = Jwks, content_type = "application/jwk-set+json"),
        (status = 405, description = "Only GET", body = Error),
    ))]
fn jwks() {}

#[utoipa::path(get, path = "/api/products", tag = "catalog",
    params(
        ("q" = Option<String>, Query, description = "Text to search for"),
        ("cursor" = Option<String>, Query, description = "From the previous page's next_cursor"),
        ("limit" = Option<i64>, Query, description = "Page size", minimum = 1, maximum = 100),
    ),
    responses(
        (status = 200, description = "A page of products", body = ProductPage),
        (status = 400, description = "Bad cursor or limit", body = Error),
        (status = 422, description = "Bad cursor or limit", body = Error),
    ))]
fn list_products() {}

#[utoipa::path(get, path = "/api/products/{id}", tag = "catalog",
    params(("id" = String, Path, description = "Product id")),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 404, description = "No such product", body = Error),
    ))]
fn get_product() {}

#[utoipa::path(get, path = "/api/cart", tag = "cart", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's cart, at current prices", body = Cart),
        (status = 401, description = "No valid access token", body = Error),
    ))]
fn get_cart() {}

#[utoipa::path(put, path = "/api/cart/items/{sku}", tag = "cart", security(("bearer" = [])),
    params(("sku" = String, Path)),
    request_body = CartQuantity,
    responses(
        (status = 200, description = "The updated cart", body = Cart),
        (status = 401, description = "No valid access token", body = Error),
        (status = 422, description = "Unknown SKU or bad quantity", body = Error),
    ))]
fn put_cart_item() {}

#[utoipa::path(delete, path = "/api/cart/items/{sku}", tag = "cart", security(("bearer" = [])),
    params(("sku" = String, Path)),
    responses(
        (status = 200, description = "The updated cart", body = Cart),
        (status = 401, description = "No valid access token", body = Error),
        (status = 404, description = "That SKU is not in the cart", body = Error),
    ))]
fn delete_cart_item() {}

#[utoipa::path(post, path = "/api/orders", tag = "orders", security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "A retry with the same key returns the same order")),
    request_body = CheckoutRequest,
    responses(
        (status = 202, description = "Order accepted; its status moves on by events", body = OrderAccepted),
        (status = 400, description = "Missing Idempotency-Key", body = Error),
        (status = 401, description = "No valid access token", body = Error),
        (status = 422, description = "Invalid items, empty cart, or a reused key", body = Error),
    ))]
fn checkout() {}

#[utoipa::path(get, path = "/api/orders", tag = "orders", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's orders, newest first", body = OrderList),
        (status = 401, description = "No valid access token", body = Error),
    ))]
fn list_orders() {}

#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 401, description = "No valid access token", body = Error),
        (status = 404, description = "No such order (or another user's)", body = Error),
    ))]
fn get_order() {}

#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "Cancelled; stock is released and any charge refunded", body = Order),
        (status = 401, description = "No valid access token", body = Error),
        (status = 404, description = "No such order", body = Error),
        (status = 409, description = "The order is no longer pending", body = Error),
    ))]
fn cancel_order() {}

#[utoipa::path(get, path = "/api/orders/{id}/events", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "Server-Sent Events: one `data:` line (the order as JSON) per status change",
            content_type = "text/event-stream", body = String),
        (status = 401, description = "No valid access token", body = Error),
        (status = 404, description = "No such order", body = Error),
    ))]
fn order_events() {}

#[utoipa::path(post, path = "/api/admin/products", tag = "admin", security(("bearer" = [])),
    request_body = ProductDraft,
    responses(
        (status = 201, description = "Created; a ProductSnapshot is published", body = Product),
        (status = 401, description = "No valid access token", body = Error),
        (status = 403, description = "Not an admin", body = Error),
        (status = 409, description = "Slug or SKU taken", body = Error),
        (status = 422, description = "Invalid product", body = Error),
    ))]
fn create_product() {}

#[utoipa::path(put, path = "/api/admin/products/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = ProductDraft,
    responses(
        (status = 200, description = "Updated; a ProductSnapshot is published", body = Product),
        (status = 401, description = "No valid access token", body = Error),
        (status = 403, description = "Not an admin", body = Error),
        (status = 404, description = "No such product", body = Error),
        (status = 409, description = "Slug or SKU taken by another product", body = Error),
        (status = 422, description = "Invalid product", body = Error),
    ))]
fn update_product() {}

#[utoipa::path(put, path = "/api/admin/inventory/{sku}", tag = "admin", security(("bearer" = [])),
    params(("sku" = String, Path)),
    request_body = SetStock,
    responses(
        (status = 200, description = "The new stock level", body = StockLevel),
        (status = 401, description = "No valid access token", body = Error),
        (status = 403, description = "Not an admin", body = Error),
        (status = 422, description = "Invalid quantity", body = Error),
    ))]
fn set_stock() {}

#[utoipa::path(get, path = "/api/admin/inventory/{sku}", tag = "admin", security(("bearer" = [])),
    params(("sku" = String, Path)),
    responses(
        (status = 200, description = "The stock level", body = StockLevel),
        (status = 401, description = "No valid access token", body = Error),
        (status = 403, description = "Not an admin", body = Error),
        (status = 404, description = "No stock recorded for this SKU", body = Error),
    ))]
fn get_stock() {}

#[utoipa::path(get, path = "/api/notifications", tag = "notifications", security(("bearer" = [])),
    params(("limit" = Option<i64>, Query, description = "How many, newest first", minimum = 1, maximum = 200)),
    responses(
        (status = 200, description = "The caller's notifications and unread count", body = NotificationFeed),
        (status = 401, description = "No valid access token", body = Error),
        (status = 422, description = "Limit out of range", body = Error),
    ))]
fn list_notifications() {}

#[utoipa::path(post, path = "/api/notifications/{id}/read", tag = "notifications", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "Marked read (the first read time is kept)", body = Notification),
        (status = 401, description = "No valid access token", body = Error),
        (status = 404, description = "No such notification (or another user's)", body = Error),
    ))]
fn read_notification() {}

#[utoipa::path(get, path = "/api/admin/shipments", tag = "admin", security(("bearer" = [])),
    params(
        ("status" = Option<ShipmentStatusFilter>, Query, description = "Only shipments in this status"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500),
    ),
    responses(
        (status = 200, description = "The newest shipments", body = ShipmentList),
        (status = 403, description = "Not an admin", body = Error),
        (status = 422, description = "Unknown status or limit out of range", body = Error),
    ))]
fn list_shipments() {}

#[utoipa::path(get, path = "/api/admin/shipments/{order_id}", tag = "admin", security(("bearer" = [])),
    params(("order_id" = uuid::Uuid, Path, description = "The order the shipment is for")),
    responses(
        (status = 200, description = "The order's shipment", body = Shipment),
        (status = 403, description = "Not an admin", body = Error),
        (status = 404, description = "No shipment for this order", body = Error),
    ))]
fn get_shipment() {}

#[utoipa::path(post, path = "/api/admin/shipments/{order_id}/dispatch", tag = "admin", security(("bearer" = [])),
    params(("order_id" = uuid::Uuid, Path, description = "The order the shipment is for")),
    responses(
        (status = 200, description = "Dispatched (or already was); ShipmentDispatched is published once", body = Shipment),
        (status = 403, description = "Not an admin", body = Error),
        (status = 404, description = "No shipment for this order", body = Error),
        (status = 409, description = "Already delivered", body = Error),
    ))]
fn dispatch_shipment() {}

#[utoipa::path(post, path = "/api/admin/shipments/{order_id}/deliver", tag = "admin", security(("bearer" = [])),
    params(("order_id" = uuid::Uuid, Path, description = "The order the shipment is for")),
    responses(
        (status = 200, description = "Delivered (or already was); ShipmentDelivered is published once", body = Shipment),
        (status = 403, description = "Not an admin", body = Error),
        (status = 404, description = "No shipment for this order", body = Error),
        (status = 409, description = "Not dispatched yet", body = Error),
    ))]
fn deliver_shipment() {}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Answers any operation can give, added wherever not documented already: the gateway refuses
/// malformed paths (400), over-long bodies (413), non-JSON bodies (415) and missing or bad tokens
/// (401, on operations that need one), always in the shared error shape.
struct CommonAnswers;

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = || {
            ResponseBuilder::new().content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Error")))
                    .build(),
            )
        };
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let mut common = vec![("400", "Malformed path, query or body")];
                if operation.request_body.is_some() {
                    common.push(("413", "Body too large"));
                    common.push(("415", "The body is not JSON"));
                }
                if operation.security.is_some() {
                    common.push(("401", "No valid access token"));
                }
                for (status, description) in common {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error().description(description).build().into());
                }
            }
        }
    }
}

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Bazaar public API",
        description = "Everything a storefront calls, through the gateway. Errors share one shape: \
            `{\"error\": {\"code\": \"...\", \"message\": \"...\"}}`. Log in at /api/auth/login and \
            send the access token as `Authorization: Bearer <token>`."
    ),
    paths(
        register, login, refresh, logout, me, jwks,
        list_products, get_product,
        get_cart, put_cart_item, delete_cart_item,
        checkout, list_orders, get_order, cancel_order, order_events,
        create_product, update_product, set_stock, get_stock,
        list_notifications, read_notification,
        list_shipments, get_shipment, dispatch_shipment, deliver_shipment,
    ),
    // Types used only as parameters are not collected on their own.
    components(schemas(ShipmentStatusFilter)),
    modifiers(&BearerAuth, &CommonAnswers),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "catalog", description = "Browsing products"),
        (name = "cart", description = "The caller's server-side cart"),
        (name = "orders", description = "Checkout and the caller's orders"),
        (name = "notifications", description = "The caller's notification feed"),
        (name = "admin", description = "Needs the admin role"),
    )
)]
pub struct PublicApi;

/// The document, rendered once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        PublicApi::openapi()
            .to_json()
            .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
    })
}

pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

/// Relative asset links in Swagger UI's page need the trailing slash.
pub async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/api/docs/"))
        .finish()
}

pub async fn docs_file(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    static CONFIG: OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> = OnceLock::new();
    let config = CONFIG
        .get_or_init(|| Arc::new(utoipa_swagger_ui::Config::from("/api/openapi.json")))
        .clone();
    match utoipa_swagger_ui::serve(&path, config) {
        Ok(Some(file)) => {
            let mut response = HttpResponse::Ok();
            response.content_type(file.content_type);
            if file.gzpipped {
                response.insert_header((header::CONTENT_ENCODING, "gzip"));
            }
            Ok(response.body(file.bytes.into_owned()))
        }
        Ok(None) => Err(ApiError::not_found("no such file")),
        Err(error) => Err(ApiError::internal(anyhow::anyhow!("swagger ui: {error}"))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn the_document_lists_every_public_route() {
        let document: Value = serde_json::from_str(document()).expect("json");
        let paths = document["paths"].as_object().expect("paths");
        for (path, method) in [
            ("/api/auth/register", "post"),
            ("/api/auth/login", "post"),
            ("/api/auth/refresh", "post"),
            ("/api/auth/logout", "post"),
            ("/api/auth/me", "get"),
            ("/.well-known/jwks.json", "get"),
            ("/api/products", "get"),
            ("/api/products/{id}", "get"),
            ("/api/cart", "get"),
            ("/api/cart/items/{sku}", "put"),
            ("/api/cart/items/{sku}", "delete"),
            ("/api/orders", "post"),
            ("/api/orders", "get"),
            ("/api/orders/{id}", "get"),
            ("/api/orders/{id}/cancel", "post"),
            ("/api/orders/{id}/events", "get"),
            ("/api/admin/products", "post"),
            ("/api/admin/products/{id}", "put"),
            ("/api/admin/inventory/{sku}", "put"),
            ("/api/notifications", "get"),
            ("/api/notifications/{id}/read", "post"),
            ("/api/admin/shipments", "get"),
            ("/api/admin/shipments/{order_id}", "get"),
            ("/api/admin/shipments/{order_id}/dispatch", "post"),
            ("/api/admin/shipments/{order_id}/deliver", "post"),
        ] {
            assert!(
                paths.get(path).and_then(|item| item.get(method)).is_some(),
                "{method} {path} is missing"
            );
        }
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn every_reference_resolves() {
        fn references<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        found.push(target);
                    }
                    map.values().for_each(|inner| references(inner, found));
                }
                Value::Array(items) => items.iter().for_each(|inner| references(inner, found)),
                _ => {}
            }
        }
        let document: Value = serde_json::from_str(document()).expect("json");
        let mut found = Vec::new();
        references(&document, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let pointer = target.strip_prefix('#').expect("local reference");
            assert!(
                document.pointer(pointer).is_some(),
                "{target} does not resolve"
            );
        }
    }
}
