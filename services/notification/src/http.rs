//! The caller's notification feed, each route declared once on its handler.
// utoipa's `#[utoipa::path]` re-emits the types it is given with their full paths.
#![allow(unused_qualifications)]

use std::collections::BTreeMap;

use actix_web::{HttpResponse, get, post, web};
use auth_kit::AuthenticatedUser;
use platform::http::ApiError;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use crate::db;

/// The notification service's own routes (health endpoints come from `platform`).
pub fn routes(config: &mut web::ServiceConfig) {
    config.app_data(query_config());
    platform::openapi::register(config, handlers);
}

/// Every route, each declared once on its handler; served by [`routes`], described by [`openapi`].
fn handlers(config: &mut ServiceConfig<'_>) {
    config
        .service(list_notifications)
        .service(read_notification);
}

#[derive(OpenApi)]
#[openapi(
    info(title = "notification service", description = "The caller's notification feed."),
    tags((name = "notifications", description = "The caller's notification feed"))
)]
struct Api;

/// The notification service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    platform::openapi::document(Api::openapi(), handlers)
}

/// A malformed query string answers in the shared error shape, not actix's plain text.
fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|error, _request| ApiError::bad_request(error.to_string()).into())
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct FeedQuery {
    /// How many, newest first.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = NotificationFeed)]
struct Feed {
    /// Newest first.
    items: Vec<db::FeedItem>,
    /// Unread notifications of the caller, all of them (not only this page).
    unread: i64,
}

/// The caller's notifications, newest first, and how many of them are unread.
#[utoipa::path(
    tag = "notifications",
    security(("bearer" = [])),
    params(FeedQuery),
    responses(
        (status = 200, description = "The caller's notifications and unread count", body = Feed),
        (status = 422, description = "Limit out of range", body = platform::http::ErrorBody),
    ),
)]
#[get("/notifications")]
async fn list_notifications(
    user: AuthenticatedUser,
    pool: web::Data<PgPool>,
    query: web::Query<FeedQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::validation(BTreeMap::from([(
            "limit".to_owned(),
            format!("must be between 1 and {MAX_LIMIT}"),
        )])));
    }
    let (items, unread) = db::feed(&pool, user.user_id, limit).await?;
    Ok(HttpResponse::Ok().json(Feed { items, unread }))
}

/// Marks one of the caller's notifications read; someone else's answers like a missing one.
#[utoipa::path(
    tag = "notifications",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The notification")),
    responses(
        (status = 200, description = "Marked read (the first read time is kept)", body = db::FeedItem),
        (status = 404, description = "No such notification (or another user's)", body = platform::http::ErrorBody),
    ),
)]
#[post("/notifications/{id}/read")]
async fn read_notification(
    user: AuthenticatedUser,
    pool: web::Data<PgPool>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let missing = || ApiError::not_found("no such notification");
    let id = Uuid::parse_str(&id).map_err(|_| missing())?;
    let item = db::mark_read(&pool, user.user_id, id)
        .await?
        .ok_or_else(missing)?;
    Ok(HttpResponse::Ok().json(item))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_the_committed_document_is_current() {
        platform::openapi::assert_committed("notification", &openapi());
    }

    #[test]
    fn the_documented_limit_is_the_enforced_one() {
        let document = serde_json::to_value(openapi()).expect("json");
        let limit = &document["paths"]["/notifications"]["get"]["parameters"][0];
        assert_eq!(limit["name"], "limit");
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(limit["schema"]["maximum"], MAX_LIMIT);
    }
}
