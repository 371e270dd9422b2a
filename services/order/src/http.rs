use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use auth_kit::AuthenticatedUser;
use chrono::Utc;
use messaging::trace::RequestTrace;
use platform::fanout::{NotifyFanout, Signal, Subscription};
use platform::http::ApiError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::CheckoutSettings;
use crate::db::{
    self, Existing, NewOrder, OrderDbError, OrderLineRow, OrderRow, ShipmentRow, StatusChange,
};
use crate::domain::{self, CheckoutError, MAX_QUANTITY_PER_LINE, OrderInput, OrderStatus};

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/cart", web::get().to(get_cart))
        .route("/cart/items/{sku}", web::put().to(put_cart_item))
        .route("/cart/items/{sku}", web::delete().to(delete_cart_item))
        .route("/orders", web::post().to(checkout))
        .route("/orders", web::get().to(list_orders))
        .route("/orders/{id}", web::get().to(get_order))
        .route("/orders/{id}/cancel", web::post().to(cancel_order))
        .route("/orders/{id}/events", web::get().to(order_events));
}

fn field_error(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation(BTreeMap::from([(field.to_owned(), message.into())]))
}

#[derive(Debug, Serialize)]
struct CartView {
    items: Vec<CartItemView>,
    total_minor: i64,
    currency: Option<String>,
}

#[derive(Debug, Serialize)]
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

async fn get_cart(
    user: AuthenticatedUser,
    pool: web::Data<PgPool>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(cart_view(&pool, user.user_id).await?))
}

#[derive(Debug, Deserialize)]
struct CartQuantity {
    quantity: i32,
}

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
            OrderDbError::UnknownSku { .. } => field_error("sku", error.to_string()),
            OrderDbError::Database(error) => error.into(),
            other => ApiError::internal(other),
        })?;
    Ok(HttpResponse::Ok().json(cart_view(&pool, user.user_id).await?))
}

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

#[derive(Debug, Serialize, Deserialize)]
struct CheckoutLine {
    sku: String,
    quantity: i32,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckoutRequest {
    /// Omitted: check out the cart.
    items: Option<Vec<CheckoutLine>>,
    payment_token: String,
    shipping_address: String,
}

/// Why a checkout was refused.
#[derive(Debug, thiserror::Error)]
enum CheckoutFailure {
    #[error("{0}")]
    Invalid(#[from] CheckoutError),
    #[error("{field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    #[error("this Idempotency-Key was used for a different request")]
    KeyReused,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Outbox(#[from] messaging::outbox::OutboxError),
}

impl From<OrderDbError> for CheckoutFailure {
    fn from(error: OrderDbError) -> Self {
        match error {
            OrderDbError::UnknownSku { .. } => Self::Field {
                field: "items",
                message: error.to_string(),
            },
            OrderDbError::Database(error) => Self::Database(error),
            OrderDbError::Outbox(error) => Self::Outbox(error),
        }
    }
}

impl From<CheckoutFailure> for ApiError {
    fn from(failure: CheckoutFailure) -> Self {
        match failure {
            CheckoutFailure::Invalid(error) => field_error("items", error.to_string()),
            CheckoutFailure::Field { field, message } => field_error(field, message),
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
const MAX_PAYMENT_TOKEN: usize = 255;
const MAX_IDEMPOTENCY_KEY: usize = 255;

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
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "id": id, "status": status })))
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
    let token = request.payment_token.trim();
    if token.is_empty() || token.len() > MAX_PAYMENT_TOKEN || token.chars().any(char::is_control) {
        return Err(CheckoutFailure::Field {
            field: "payment_token",
            message: format!("must be 1-{MAX_PAYMENT_TOKEN} printable characters"),
        });
    }
    let address = request.shipping_address.trim();
    if address.is_empty() || address.chars().count() > MAX_ADDRESS {
        return Err(CheckoutFailure::Field {
            field: "shipping_address",
            message: format!("must be 1-{MAX_ADDRESS} characters"),
        });
    }
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
        None => db::cart(pool, user_id)
            .await?
            .into_iter()
            .map(|line| (line.sku, line.quantity))
            .collect(),
    };
    if wanted.is_empty() {
        return Err(CheckoutError::Empty.into());
    }
    let lines = db::price_lines(&mut tx, &wanted).await?;
    let (total_minor, currency) = domain::price_order(&lines)?;
    let deadline =
        chrono::Duration::milliseconds(i64::try_from(settings.deadline_ms).unwrap_or(i64::MAX));
    let order = NewOrder {
        user_id,
        lines,
        total_minor,
        currency,
        payment_token: request.payment_token.trim().to_owned(),
        shipping_address: address.to_owned(),
        deadline_at: Utc::now() + deadline,
        idempotency_key: key,
        request_digest: digest,
    };
    let id = db::insert_order(&mut tx, &order, trace.cause()).await?;
    if from_cart {
        db::clear_cart(&mut tx, user_id).await?;
    }
    tx.commit().await?;
    Ok((id, OrderStatus::Pending))
}

#[derive(Debug, Serialize)]
struct OrderView {
    #[serde(flatten)]
    order: OrderRow,
    items: Vec<OrderLineRow>,
    /// Null until the shipping service has scheduled the shipment.
    shipment: Option<ShipmentRow>,
}

async fn with_lines(pool: &PgPool, orders: Vec<OrderRow>) -> Result<Vec<OrderView>, ApiError> {
    let ids: Vec<Uuid> = orders.iter().map(|order| order.id).collect();
    let lines = db::lines_of(pool, &ids).await?;
    let mut shipments = db::shipments_of(pool, &ids).await?;
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

async fn list_orders(
    user: AuthenticatedUser,
    pool: web::Data<PgPool>,
) -> Result<HttpResponse, ApiError> {
    let orders = db::orders_of_user(&pool, user.user_id, 100).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": with_lines(&pool, orders).await? })))
}

/// Another user's order answers exactly like a missing one.
fn parse_order_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found("no such order"))
}

async fn get_order(
    user: AuthenticatedUser,
    pool: web::Data<PgPool>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_order_id(&id)?;
    let order = db::order_of_user(&pool, user.user_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such order"))?;
    let mut views = with_lines(&pool, vec![order]).await?;
    views
        .pop()
        .map(|view| HttpResponse::Ok().json(view))
        .ok_or_else(|| ApiError::not_found("no such order"))
}

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
    let decision = db::apply(
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
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": id,
        "status": decision.state.status(),
        "reason": decision.state.reason,
    })))
}

/// Server-Sent Events of an order's status changes: every change so far (or since the
/// `Last-Event-ID` a reconnecting client sends), then each new one the moment it commits; the
/// stream ends after a final status. Changes are pushed by the database's NOTIFY through
/// [`platform::fanout`], so an open stream costs nothing while its order stands still.
async fn order_events(
    request: HttpRequest,
    user: AuthenticatedUser,
    pool: web::Data<PgPool>,
    feed: web::Data<NotifyFanout>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_order_id(&id)?;
    let after = last_event_id(&request)?;
    let order = db::order_of_user(&pool, user.user_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such order"))?;
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
                self.done |= change
                    .status
                    .parse::<OrderStatus>()
                    .is_ok_and(OrderStatus::is_final);
                let data = serde_json::to_string(&change).unwrap_or_default();
                let frame = format!("event: status\nid: {}\ndata: {data}\n\n", change.id);
                return Some((Ok(web::Bytes::from(frame)), self));
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
                () = tokio::time::sleep(STREAM_KEEP_ALIVE) => {
                    return Some((Ok(web::Bytes::from_static(b": keep-alive\n\n")), self));
                }
            }
        }
    }
}
