use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use auth_kit::AuthenticatedUser;
use platform::http::ApiError;
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db;

/// The notification service's own routes (health endpoints come from `platform`).
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .app_data(query_config())
        .route("/notifications", web::get().to(list))
        .route("/notifications/{id}/read", web::post().to(mark_read));
}

/// A malformed query string answers in the shared error shape, not actix's plain text.
fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|error, _request| ApiError::bad_request(error.to_string()).into())
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

#[derive(Debug, Deserialize)]
struct FeedQuery {
    limit: Option<i64>,
}

/// The caller's notifications, newest first, and how many of them are unread.
async fn list(
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
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "unread": unread })))
}

/// Marks one of the caller's notifications read; someone else's answers like a missing one.
async fn mark_read(
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
