//! The order service's API: the caller's cart, checkout and orders, each route declared once on
//! its handler.
// utoipa's `#[utoipa::path]` re-emits the types it is given with their full paths.
#![allow(unused_qualifications)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, put, web};
use auth_kit::AuthenticatedUser;
use chrono::Utc;
use events::PostalAddress;
use messaging::trace::RequestTrace;
use platform::fanout::{NotifyFanout, Signal, Subscription};
use platform::http::ApiError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Postgres};
use tokio_util::sync::CancellationToken;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{OpenApi, PartialSchema, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use crate::config::{CheckoutSettings, StreamSettings};
use crate::db::{
    self, Existing, NewOrder, OrderDbError, OrderLineRow, OrderRow, ShipmentRow, StatusChange,
};
use order_rules::{
    Checkout, CheckoutError, MAX_QUANTITY_PER_LINE, OrderInput, OrderStatus, ShippingAddress,
};

/// The order service's routes (health endpoints come from `platform`).
pub fn routes(config: &mut web::ServiceConfig) {
    platform::openapi::register(config, handlers);
}

/// Every route, each declared once on its handler; served by [`routes`], described by [`openapi`].
fn handlers(config: &mut ServiceConfig<'_>) {
    config
        .service(get_cart)
        .service(put_cart_item)
        .service(delete_cart_item)
        .service(checkout)
        .service(list_orders)
        .service(get_order)
        .service(cancel_order)
        .service(order_events);
}

#[derive(OpenApi)]
#[openapi(
    info(title = "order service", description = "The caller's cart, checkout and orders."),
    tags(
        (name = "cart", description = "The caller's server-side cart"),
        (name = "orders", description = "Checkout and the caller's orders"),
    )
)]
struct Api;

/// The order service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    platform::openapi::document(Api::openapi(), handlers)
}

fn field_error(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation(BTreeMap::from([(field.to_owned(), message.into())]))
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Cart)]
struct CartView {
    items: Vec<CartItemView>,
    /// What the available lines cost, in minor units.
    total_minor: i64,
    /// Null while the cart is empty.
    #[schema(example = "EUR")]
    currency: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CartItem)]
struct CartItemView {
    #[serde(flatten)]
    line: db::CartLine,
    line_total_minor: i64,
}

async fn cart_view(pool: &PgPool, user: Uuid) -> Result<CartView, ApiError> {
    let lines = db::cart(pool, user).await?;
    let currency = lines.first().map(|line| line.currency.trim().to_owned());
    let items: Vec<CartItemView> = lines
        .into_iter()
        .map(|line| CartItemView {
            line_total_minor: line.unit_price_minor * i64::from(line.quantity),
            line,
        })
        .collect();
    let total_minor = items
        .iter()
        .filter(|item| item.line.available)
        .map(|item| item.line_total_minor)
        .sum();
    Ok(CartView {
        items,
        total_minor,
        currency,
    })
}

#[utoipa::path(
    tag = "cart",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller's cart, at current prices", body = CartView)),
)]
#[get("/cart")]
async fn get_cart(
    user: AuthenticatedUser,
    pool: web::Data<PgPool>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(cart_view(&pool, user.user_id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
struct CartQuantity {
    #[serde(deserialize_with = "platform::http::integer")]
    #[schema(minimum = 1, maximum = 100, example = 2)]
    quantity: i32,
}

#[utoipa::path(
    tag = "cart",
    security(("bearer" = [])),
    params(("sku" = String, Path, description = "A SKU of the catalog", pattern = r"^[A-Z0-9-]{1,64}$", example = "TEE-BLK-M")),
    request_body = CartQuantity,
    responses(
        (status = 200, description = "The updated cart", body = CartView),
        (status = 404, description = "No such SKU for sale", body = platform::http::ErrorBody),
        (status = 422, description = "Quantity out of range", body = platform::http::ErrorBody),
    ),
)]
#[put("/cart/items/{sku}")]
async fn put_cart_item(
    user: AuthenticatedUser,
    pool: web::Data<PgPool>,
    sku: web::Path<String>,
    body: web::Json<CartQuantity>,
) -> Result<HttpResponse, ApiError> {
    if !(1..=MAX_QUANTITY_PER_LINE).contains(&body.quantity) {
        return Err(field_error(
            "quantity",
            format!("must be between 1 and {MAX_QUANTITY_PER_LINE}"),
        ));
    }
    db::set_cart_item(&pool, user.user_id, &sku, body.quantity)
        .await
        .map_err(|error| match error {
            // The SKU is the path's resource: one not for sale is not found.
            OrderDbError::UnknownSku { .. } => ApiError::not_found(error.to_string()),
            OrderDbError::Database(error) => error.into(),
            other => ApiError::internal(other),
        })?;
    Ok(HttpResponse::Ok().json(cart_view(&pool, user.user_id).await?))
}

#[utoipa::path(
    tag = "cart",
    security(("bearer" = [])),
    params(("sku" = String, Path, description = "A SKU in the cart", pattern = r"^[A-Z0-9-]{1,64}$", example = "TEE-BLK-M")),
    responses(
        (status = 200, description = "The updated cart", body = CartView),
        (status = 404, description = "That SKU is not in the cart", body = platform::http::ErrorBody),
    ),
)]
#[delete("/cart/items/{sku}")]
async fn delete_cart_item(
    user: AuthenticatedUser,
    pool: web::Data<PgPool>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !db::remove_cart_item(&pool, user.user_id, &sku).await? {
        return Err(ApiError::not_found("that SKU is not in the cart"));
    }
    Ok(HttpResponse::Ok().json(cart_view(&pool, user.user_id).await?))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
struct CheckoutLine {
    #[schema(pattern = r"^[A-Z0-9-]{1,64}$", example = "TEE-BLK-M")]
    sku: String,
    #[serde(deserialize_with = "platform::http::integer")]
    #[schema(minimum = 1, maximum = 100)]
    quantity: i32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
struct CheckoutRequest {
    /// Omitted: check out the cart.
    #[schema(required = false, min_items = 1)]
    items: Option<Vec<CheckoutLine>>,
    /// Test tokens: `tok_visa` succeeds, `tok_chargeDeclined` and
    /// `tok_chargeDeclinedInsufficientFunds` decline.
    #[schema(
        example = "tok_visa",
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    payment_token: String,
    shipping_address: ShippingAddressInput,
}

/// Where the order ships: a postal address, or (deprecated) free text.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
enum ShippingAddressInput {
    Postal(PostalAddress),
    /// Deprecated since 2026-12-06, accepted until the `Sunset` date each answer to it carries
    /// (2027-06-30): free text, not blank, at most 500 characters, no NUL. Such an order has no
    /// country and ships as domestic.
    FreeText(String),
}

/// A checkout's answer: the order exists; its status moves on by events.
#[derive(Debug, Serialize, ToSchema)]
struct OrderAccepted {
    id: Uuid,
    #[schema(value_type = String, example = "pending")]
    status: OrderStatus,
}

/// Why a checkout was refused.
#[derive(Debug, thiserror::Error)]
enum CheckoutFailure {
    #[error("{0}")]
    Invalid(#[from] CheckoutError),
    /// Fields of the request that are not valid, each with why.
    #[error("invalid fields: {0:?}")]
    Fields(BTreeMap<String, String>),
    #[error("this Idempotency-Key was used for a different request")]
    KeyReused,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Outbox(#[from] messaging::outbox::OutboxError),
}

impl CheckoutFailure {
    fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Fields(BTreeMap::from([(field.to_owned(), message.into())]))
    }
}

impl From<OrderDbError> for CheckoutFailure {
    fn from(error: OrderDbError) -> Self {
        match error {
            OrderDbError::UnknownSku { .. } => Self::field("items", error.to_string()),
            OrderDbError::Database(error) => Self::Database(error),
            OrderDbError::Outbox(error) => Self::Outbox(error),
        }
    }
}

impl From<CheckoutFailure> for ApiError {
    fn from(failure: CheckoutFailure) -> Self {
        match failure {
            CheckoutFailure::Invalid(error) => field_error("items", error.to_string()),
            CheckoutFailure::Fields(fields) => ApiError::validation(fields),
            CheckoutFailure::KeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                failure.to_string(),
            ),
            CheckoutFailure::Database(error) => ApiError::internal(error),
            CheckoutFailure::Outbox(error) => ApiError::internal(error),
        }
    }
}

const MAX_ADDRESS: usize = 500;
/// When the free-text `shipping_address` was deprecated (RFC 9745: `@` and a Unix time,
/// 2026-12-06T00:00:00Z).
const FREE_TEXT_ADDRESS_DEPRECATED: &str = "@1796515200";
/// The last day a free-text `shipping_address` is accepted (RFC 8594, an HTTP date).
const FREE_TEXT_ADDRESS_SUNSET: &str = "Wed, 30 Jun 2027 23:59:59 GMT";
const MAX_PAYMENT_TOKEN: usize = 255;
const MAX_IDEMPOTENCY_KEY: usize = 255;

#[utoipa::path(
    tag = "orders",
    security(("bearer" = [])),
    params((
        "Idempotency-Key" = Option<String>, Header,
        description = "A retry with the same key and body returns the same order",
        nullable = false, min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]*[!-~])?$",
    )),
    request_body = CheckoutRequest,
    responses(
        (status = 202, description = "Order accepted; its status moves on by events", body = OrderAccepted),
        (status = 422, description = "Unknown or repeated SKUs, an empty cart, mixed currencies, or a key reused for another request", body = platform::http::ErrorBody),
    ),
)]
#[post("/orders")]
async fn checkout(
    user: AuthenticatedUser,
    pool: web::Data<PgPool>,
    settings: web::Data<CheckoutSettings>,
    request: HttpRequest,
    trace: RequestTrace,
    body: web::Json<CheckoutRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = match request.headers().get("Idempotency-Key") {
        Some(value) => {
            let key = value
                .to_str()
                .map_err(|_| field_error("Idempotency-Key", "must be visible ASCII"))?
                .trim();
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
                return Err(field_error(
                    "Idempotency-Key",
                    format!("must be 1-{MAX_IDEMPOTENCY_KEY} characters"),
                ));
            }
            Some(key.to_owned())
        }
        None => None,
    };
    let (id, status) = place_order(&pool, &settings, user.user_id, key, &body, trace).await?;
    let mut answer = HttpResponse::Accepted();
    if matches!(body.shipping_address, ShippingAddressInput::FreeText(_)) {
        // RFC 9745 and RFC 8594: the free-text address is deprecated and will be refused after
        // the sunset date.
        answer
            .insert_header(("Deprecation", FREE_TEXT_ADDRESS_DEPRECATED))
            .insert_header(("Sunset", FREE_TEXT_ADDRESS_SUNSET));
    }
    Ok(answer.json(OrderAccepted { id, status }))
}

async fn place_order(
    pool: &PgPool,
    settings: &CheckoutSettings,
    user_id: Uuid,
    key: Option<String>,
    request: &CheckoutRequest,
    trace: RequestTrace,
) -> Result<(Uuid, OrderStatus), CheckoutFailure> {
    // The token travels on in OrderCreated and into the payment service's records, where a
    // control character could never be stored: refuse it here, before anything is written.
    // Lengths count characters as sent, as the document's `maxLength` does.
    let token = request.payment_token.trim();
    if token.is_empty()
        || request.payment_token.chars().count() > MAX_PAYMENT_TOKEN
        || request.payment_token.chars().any(char::is_control)
    {
        return Err(CheckoutFailure::field(
            "payment_token",
            format!("must be 1-{MAX_PAYMENT_TOKEN} printable characters"),
        ));
    }
    let address = match &request.shipping_address {
        ShippingAddressInput::Postal(sent) => {
            let checked = order_rules::postal_address(sent).map_err(|errors| {
                CheckoutFailure::Fields(
                    errors
                        .into_iter()
                        .map(|(field, message)| (format!("shipping_address.{field}"), message))
                        .collect(),
                )
            })?;
            ShippingAddress::Postal(checked)
        }
        ShippingAddressInput::FreeText(text) => {
            if text.trim().is_empty() || text.chars().count() > MAX_ADDRESS || text.contains('\0') {
                return Err(CheckoutFailure::field(
                    "shipping_address",
                    format!(
                        "must be 1-{MAX_ADDRESS} characters, or a postal address \
                         {{name, line1, line2, city, postal_code, country}}"
                    ),
                ));
            }
            ShippingAddress::FreeText(text.trim().to_owned())
        }
    };
    let digest: String = Sha256::digest(serde_json::to_vec(request).unwrap_or_default())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut tx = pool.begin().await?;
    if let Some(key) = &key {
        // Serialises retries of one key, so two concurrent retries create one order.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 0))")
            .bind(user_id.to_string())
            .bind(key)
            .execute(&mut *tx)
            .await?;
        match db::find_by_idempotency_key(&mut tx, user_id, key, &digest).await? {
            Some(Existing::Same { id, status }) => return Ok((id, status)),
            Some(Existing::Different) => return Err(CheckoutFailure::KeyReused),
            None => {}
        }
    }
    let from_cart = request.items.is_none();
    let wanted: Vec<(String, i32)> = match &request.items {
        Some(items) => items
            .iter()
            .map(|line| (line.sku.clone(), line.quantity))
            .collect(),
        // In the checkout's transaction, which clears the cart it read: not on a second
        // connection, for which a pool that every checkout holds one of could wait forever.
        None => db::cart(&mut *tx, user_id)
            .await?
            .into_iter()
            .map(|line| (line.sku, line.quantity))
            .collect(),
    };
    if wanted.is_empty() {
        return Err(CheckoutError::Empty.into());
    }
    let lines = db::price_lines(&mut tx, &wanted).await?;
    let priced = Checkout::new(lines, request.payment_token.trim().to_owned(), address)?;
    let deadline =
        chrono::Duration::milliseconds(i64::try_from(settings.deadline_ms).unwrap_or(i64::MAX));
    let order = NewOrder {
        user_id,
        checkout: priced,
        deadline_at: Utc::now() + deadline,
        idempotency_key: key,
        request_digest: digest,
    };
    let id = crate::consumers::place(&mut tx, &order, trace.cause()).await?;
    if from_cart {
        db::clear_cart(&mut tx, user_id).await?;
    }
    tx.commit().await?;
    Ok((id, OrderStatus::Pending))
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Order)]
struct OrderView {
    #[serde(flatten)]
    order: OrderRow,
    items: Vec<OrderLineRow>,
    /// Null until the shipping service has scheduled the shipment.
    shipment: Option<ShipmentRow>,
}

/// A read-only transaction that sees one snapshot: an order's status and its shipment move in
/// one commit of the consumer, and two plain reads could straddle it (a `dispatched` shipment on
/// an order still `shipping_scheduled`).
async fn snapshot(pool: &PgPool) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// `orders` with their lines and shipments, read in `tx`'s snapshot.
async fn with_lines(
    tx: &mut PgConnection,
    orders: Vec<OrderRow>,
) -> Result<Vec<OrderView>, ApiError> {
    let ids: Vec<Uuid> = orders.iter().map(|order| order.id).collect();
    let lines = db::lines_of(&mut *tx, &ids).await?;
    let mut shipments = db::shipments_of(&mut *tx, &ids).await?;
    Ok(orders
        .into_iter()
        .map(|order| {
            let items = lines
                .iter()
                .filter(|line| line.order_id == order.id)
                .cloned()
                .collect();
            let shipment = shipments
                .iter()
                .position(|shipment| shipment.order_id == order.id)
                .map(|found| shipments.swap_remove(found));
            OrderView {
                order,
                items,
                shipment,
            }
        })
        .collect())
}

const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;

/// One page of the caller's orders.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct OrderPage {
    /// How many orders, newest first.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<i64>,
    /// Only orders placed before this one: the previous page's `next`.
    before: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
struct OrderList {
    /// The caller's orders, newest first.
    items: Vec<OrderView>,
    /// The `before` of the next (older) page; `null` on the last page.
    next: Option<Uuid>,
}

#[utoipa::path(
    tag = "orders",
    security(("bearer" = [])),
    params(OrderPage),
    responses(
        (status = 200, description = "A page of the caller's orders, newest first", body = OrderList),
        (status = 422, description = "Limit out of range", body = platform::http::ErrorBody),
    ),
)]
#[get("/orders")]
async fn list_orders(
    user: AuthenticatedUser,
    pool: web::Data<PgPool>,
    page: web::Query<OrderPage>,
) -> Result<HttpResponse, ApiError> {
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::validation(BTreeMap::from([(
            "limit".to_owned(),
            format!("must be between 1 and {MAX_PAGE}"),
        )])));
    }
    // One more than the page tells whether an older page exists.
    let mut tx = snapshot(&pool).await?;
    let mut orders = db::orders_of_user(&mut *tx, user.user_id, page.before, limit + 1).await?;
    let more = orders.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    orders.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = more.then(|| orders.last().map(|order| order.id)).flatten();
    let items = with_lines(&mut tx, orders).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(OrderList { items, next }))
}

/// Another user's order answers exactly like a missing one.
fn parse_order_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found("no such order"))
}

#[utoipa::path(
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order")),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 404, description = "No such order (or another user's)", body = platform::http::ErrorBody),
    ),
)]
#[get("/orders/{id}")]
async fn get_order(
    user: AuthenticatedUser,
    pool: web::Data<PgPool>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_order_id(&id)?;
    let mut tx = snapshot(&pool).await?;
    let order = db::order_of_user(&mut *tx, user.user_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such order"))?;
    let mut views = with_lines(&mut tx, vec![order]).await?;
    tx.commit().await?;
    views
        .pop()
        .map(|view| HttpResponse::Ok().json(view))
        .ok_or_else(|| ApiError::not_found("no such order"))
}

/// A cancellation's answer.
#[derive(Debug, Serialize, ToSchema)]
struct Cancelled {
    id: Uuid,
    #[schema(value_type = String, example = "cancelled")]
    status: OrderStatus,
    #[schema(example = "customer_request")]
    reason: Option<String>,
}

#[utoipa::path(
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order")),
    responses(
        (status = 200, description = "Cancelled; stock is released and any charge refunded", body = Cancelled),
        (status = 404, description = "No such order (or another user's)", body = platform::http::ErrorBody),
        (status = 409, description = "The order can no longer be cancelled", body = platform::http::ErrorBody),
    ),
)]
#[post("/orders/{id}/cancel")]
async fn cancel_order(
    user: AuthenticatedUser,
    pool: web::Data<PgPool>,
    trace: RequestTrace,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_order_id(&id)?;
    let mut tx = pool.begin().await?;
    let (owner, state) = db::lock_order(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such order"))?;
    if owner != user.user_id {
        return Err(ApiError::not_found("no such order"));
    }
    let decision = crate::consumers::apply(
        &mut tx,
        id,
        &state,
        &OrderInput::CustomerCancelled,
        trace.cause(),
    )
    .await
    .map_err(ApiError::internal)?;
    if let Some(why) = decision.refused {
        return Err(ApiError::conflict(why));
    }
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(Cancelled {
        id,
        status: decision.state.status(),
        reason: decision.state.reason,
    }))
}

/// One event of an order's stream as a client reads it (Server-Sent Events): `event: status`,
/// `id:` the change's number (send it back as `Last-Event-ID` to resume), and `data:` the change
/// as JSON. Written by [`status_frame`].
#[derive(Debug)]
struct StatusEvent;

impl PartialSchema for StatusEvent {
    fn schema() -> RefOr<Schema> {
        let text = || ObjectBuilder::new().schema_type(Type::String);
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("One Server-Sent Event: a status change of the order"))
            .property("event", text().enum_values(Some(["status"])))
            .property("id", text().pattern(Some("^[0-9]+$")))
            .property(
                "data",
                text()
                    .content_media_type("application/json")
                    .content_schema(Some(Ref::from_schema_name(StatusChange::name()))),
            )
            .required("event")
            .required("id")
            .required("data")
            .build()
            .into()
    }
}

impl ToSchema for StatusEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((StatusChange::name().into(), StatusChange::schema()));
        <StatusChange as ToSchema>::schemas(schemas);
    }
}

/// The Server-Sent Event of one status change.
fn status_frame(change: &StatusChange) -> String {
    let data = serde_json::to_string(change).unwrap_or_default();
    format!("event: status\nid: {}\ndata: {data}\n\n", change.id)
}

/// Server-Sent Events of an order's status changes: every change so far (or since the
/// `Last-Event-ID` a reconnecting client sends), then each new one the moment it commits; the
/// stream ends after a final status, or after `streams.idle_timeout_ms` without a change. Changes
/// are pushed by the database's NOTIFY through [`platform::fanout`], so an open stream costs
/// nothing while its order stands still. Each user may have `streams.max_per_user` open: one
/// more closes their oldest, whose client (most often a page since left or reloaded, which the
/// server only finds out at its next keep-alive writes) reconnects with `Last-Event-ID` if it is
/// still there.
#[utoipa::path(
    tag = "orders",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The order"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "The last event id seen, to resume after it", pattern = r"^[0-9]{1,18}$"),
    ),
    responses(
        (status = 200, description = "Every status change so far (or since `Last-Event-ID`), then each new one as it happens; ends after a final status. Comment lines keep the connection alive.",
            content_type = "text/event-stream", body = StatusEvent),
        (status = 400, description = "Not an event id this stream sent", body = platform::http::ErrorBody),
        (status = 404, description = "No such order (or another user's)", body = platform::http::ErrorBody),
    ),
)]
#[get("/orders/{id}/events")]
async fn order_events(
    request: HttpRequest,
    user: AuthenticatedUser,
    pool: web::Data<PgPool>,
    feed: web::Data<NotifyFanout>,
    open_streams: web::Data<OpenStreams>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_order_id(&id)?;
    let after = last_event_id(&request)?;
    let order = db::order_of_user(pool.get_ref(), user.user_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such order"))?;
    let permit = open_streams.open(user.user_id);
    // Subscribed before the first read: a change committed in between is heard, not lost.
    let stream = StatusStream {
        pool: pool.into_inner(),
        order_id: id,
        subscription: feed.subscribe(&id.to_string()),
        after,
        pending: VecDeque::new(),
        must_read: true,
        // A final status never changes again: once the history is sent, nothing will follow
        // (a client that reconnects after the end gets what it missed, then the end).
        done: order
            .status
            .parse::<OrderStatus>()
            .is_ok_and(OrderStatus::is_final),
        idle_timeout: open_streams.idle_timeout,
        last_change_at: tokio::time::Instant::now(),
        permit,
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures::stream::unfold(stream, StatusStream::next_frame)))
}

/// The history id a reconnecting client saw last; 0 (from the start) when it sends none.
fn last_event_id(request: &HttpRequest) -> Result<i64, ApiError> {
    let Some(value) = request.headers().get("last-event-id") else {
        return Ok(0);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
        .filter(|id| *id >= 0)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_last_event_id",
                "Last-Event-ID must be an event id this stream sent",
            )
        })
}

/// A comment line now and then lets proxies keep the connection and shows a vanished client.
const STREAM_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The order event streams each user has open on this instance, oldest first, against a limit:
/// each holds a connection and a subscription for as long as the client keeps it.
#[derive(Debug)]
pub struct OpenStreams {
    max_per_user: u32,
    idle_timeout: Duration,
    per_user: Arc<Mutex<HashMap<Uuid, VecDeque<OpenStream>>>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct OpenStream {
    id: u64,
    /// Cancelled to close the stream in favour of a newer one of the same user.
    displaced: CancellationToken,
}

impl OpenStreams {
    pub fn new(settings: &StreamSettings) -> Self {
        Self {
            max_per_user: settings.max_per_user,
            idle_timeout: Duration::from_millis(settings.idle_timeout_ms),
            per_user: Arc::default(),
            next_id: AtomicU64::new(0),
        }
    }

    /// A place for one more stream of `user`, held until the permit is dropped (the stream
    /// ended or its client went away). When the user has all their streams open, the oldest is
    /// told to close: a refusal would leave a customer who reloaded a page a few times without
    /// live updates until the server noticed the pages were gone, while the limit still holds.
    fn open(&self, user: Uuid) -> StreamPermit {
        let mut per_user = self.per_user.lock().unwrap_or_else(PoisonError::into_inner);
        let open = per_user.entry(user).or_default();
        let excess = (open.len() + 1).saturating_sub(self.max_per_user.max(1) as usize);
        for oldest in open.drain(..excess) {
            oldest.displaced.cancel();
            metrics::counter!("order_event_streams_displaced_total").increment(1);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let displaced = CancellationToken::new();
        open.push_back(OpenStream {
            id,
            displaced: displaced.clone(),
        });
        metrics::gauge!("order_event_streams_open").increment(1.0);
        StreamPermit {
            user,
            id,
            displaced,
            per_user: self.per_user.clone(),
        }
    }
}

struct StreamPermit {
    user: Uuid,
    id: u64,
    displaced: CancellationToken,
    per_user: Arc<Mutex<HashMap<Uuid, VecDeque<OpenStream>>>>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut per_user = self.per_user.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = per_user.get_mut(&self.user) {
            // A displaced stream has already left the list.
            open.retain(|stream| stream.id != self.id);
            if open.is_empty() {
                per_user.remove(&self.user);
            }
        }
        metrics::gauge!("order_event_streams_open").decrement(1.0);
    }
}

struct StatusStream {
    pool: Arc<PgPool>,
    order_id: Uuid,
    subscription: Subscription,
    /// The last history id sent.
    after: i64,
    pending: VecDeque<StatusChange>,
    /// The database must be read: at the start, and whenever notifications may have been lost.
    must_read: bool,
    done: bool,
    /// Closed when no change has been sent for this long.
    idle_timeout: Duration,
    last_change_at: tokio::time::Instant,
    /// This stream's place among the user's open streams, given back when it is dropped.
    permit: StreamPermit,
}

impl StatusStream {
    async fn next_frame(mut self) -> Option<(Result<web::Bytes, actix_web::Error>, Self)> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                // A change both read and heard, or heard twice, is sent once.
                if change.id <= self.after {
                    continue;
                }
                self.after = change.id;
                self.last_change_at = tokio::time::Instant::now();
                self.done |= change
                    .status
                    .parse::<OrderStatus>()
                    .is_ok_and(OrderStatus::is_final);
                return Some((Ok(web::Bytes::from(status_frame(&change))), self));
            }
            if self.done && !self.must_read {
                return None;
            }
            if self.must_read {
                match db::status_changes(&self.pool, self.order_id, self.after).await {
                    Ok(changes) => {
                        self.must_read = false;
                        self.pending.extend(changes);
                        continue;
                    }
                    Err(error) => {
                        // The client reconnects with Last-Event-ID and resumes where it was.
                        tracing::warn!(%error, order_id = %self.order_id, "status stream cannot read the order; closing it");
                        return None;
                    }
                }
            }
            tokio::select! {
                signal = self.subscription.recv() => match signal {
                    Some(Signal::Notified(body)) => match serde_json::from_str::<StatusChange>(&body) {
                        Ok(change) => self.pending.push_back(change),
                        Err(error) => {
                            tracing::warn!(%error, body, "unreadable status notification; reading the order instead");
                            self.must_read = true;
                        }
                    },
                    Some(Signal::Missed) => self.must_read = true,
                    // The service is shutting down.
                    None => return None,
                },
                () = self.permit.displaced.cancelled() => {
                    tracing::debug!(order_id = %self.order_id, "status stream displaced by a newer one of the same customer; closing it");
                    return None;
                }
                () = tokio::time::sleep_until(self.last_change_at + self.idle_timeout) => {
                    tracing::debug!(order_id = %self.order_id, "status stream idle; closing it");
                    return None;
                }
                () = tokio::time::sleep(STREAM_KEEP_ALIVE) => {
                    return Some((Ok(web::Bytes::from_static(b": keep-alive\n\n")), self));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_the_committed_document_is_current() {
        platform::openapi::assert_committed("order", &openapi());
    }

    #[test]
    fn the_documented_limits_are_the_enforced_ones() {
        let document = serde_json::to_value(openapi()).expect("json");
        let schemas = &document["components"]["schemas"];
        for (schema, field) in [("CartQuantity", "quantity"), ("CheckoutLine", "quantity")] {
            let property = &schemas[schema]["properties"][field];
            assert_eq!(property["minimum"], 1, "{schema}.{field}");
            assert_eq!(
                property["maximum"], MAX_QUANTITY_PER_LINE,
                "{schema}.{field}"
            );
        }
        let request = &schemas["CheckoutRequest"]["properties"];
        assert_eq!(request["payment_token"]["maxLength"], MAX_PAYMENT_TOKEN);
        let address = &schemas["PostalAddress"]["properties"];
        assert_eq!(
            address["country"]["maxLength"], 2,
            "{}",
            schemas["PostalAddress"]
        );
        assert!(
            request["shipping_address"].is_object(),
            "{}",
            request["shipping_address"]
        );
        let key = &document["paths"]["/orders"]["post"]["parameters"][0];
        assert_eq!(key["name"], "Idempotency-Key");
        assert_eq!(key["schema"]["maxLength"], MAX_IDEMPOTENCY_KEY);
    }

    #[test]
    fn a_status_frame_is_one_event_with_the_documented_fields() {
        let change = StatusChange {
            id: 7,
            status: "paid".into(),
            reason: None,
            at: Utc::now(),
        };
        let frame = status_frame(&change);
        let lines: Vec<&str> = frame.trim_end().lines().collect();
        assert_eq!(lines[0], "event: status");
        assert_eq!(lines[1], "id: 7");
        let data: serde_json::Value =
            serde_json::from_str(lines[2].strip_prefix("data: ").expect("data")).expect("json");
        assert_eq!(data["status"], "paid");
        assert!(frame.ends_with("\n\n"));
    }
}
