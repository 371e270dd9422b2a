//! The auth database: users, signing keys, refresh tokens and throttling counters.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use crate::domain::{NewAccount, ThrottleWindow};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub display_name: String,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum InsertUserError {
    #[error("an account with this e-mail address exists")]
    DuplicateEmail,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Inserts the account; returns when it was created. A duplicate address (any case) is
/// reported without aborting the transaction.
pub async fn insert_user(
    tx: &mut PgConnection,
    id: Uuid,
    account: &NewAccount,
    password_hash: &str,
    roles: &[String],
) -> Result<DateTime<Utc>, InsertUserError> {
    let created: Option<(DateTime<Utc>,)> = sqlx::query_as(
        "INSERT INTO users (id, email, password_hash, display_name, roles)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT ((lower(email))) DO NOTHING
         RETURNING created_at",
    )
    .bind(id)
    .bind(&account.email)
    .bind(password_hash)
    .bind(&account.name)
    .bind(roles)
    .fetch_optional(tx)
    .await?;
    created
        .map(|(at,)| at)
        .ok_or(InsertUserError::DuplicateEmail)
}

pub async fn find_user_by_email(
    pool: &PgPool,
    email: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, UserRow>(
        "SELECT id, email, password_hash, display_name, roles, created_at
           FROM users WHERE lower(email) = lower($1)",
    )
    .bind(email)
    .fetch_optional(pool)
    .await
}

pub async fn find_user(
    executor: impl sqlx::PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, UserRow>(
        "SELECT id, email, password_hash, display_name, roles, created_at
           FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(executor)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub kid: String,
    pub private_key: Vec<u8>,
}

/// The key that signs new tokens, if there is one.
pub async fn active_key(
    executor: impl sqlx::PgExecutor<'_>,
) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, KeyRow>(
        "SELECT kid, private_key FROM signing_keys WHERE retired_at IS NULL",
    )
    .fetch_optional(executor)
    .await
}

/// Adds an active key unless one exists already; true when this one was added.
pub async fn insert_active_key(
    executor: impl sqlx::PgExecutor<'_>,
    kid: &str,
    private_key: &[u8],
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO signing_keys (kid, private_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(kid)
    .bind(private_key)
    .execute(executor)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Retires the active key, keeping it published until `publish_until`. Returns its kid.
pub async fn retire_active_key(
    tx: &mut PgConnection,
    publish_until: DateTime<Utc>,
) -> Result<Option<String>, sqlx::Error> {
    let retired: Option<(String,)> = sqlx::query_as(
        "UPDATE signing_keys SET retired_at = now(), publish_until = $1
          WHERE retired_at IS NULL RETURNING kid",
    )
    .bind(publish_until)
    .fetch_optional(tx)
    .await?;
    Ok(retired.map(|(kid,)| kid))
}

/// Every key whose public half belongs in the JWKS, oldest first.
pub async fn published_keys(pool: &PgPool) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, KeyRow>(
        "SELECT kid, private_key FROM signing_keys
          WHERE publish_until IS NULL OR publish_until > now()
          ORDER BY created_at, kid",
    )
    .fetch_all(pool)
    .await
}

pub async fn delete_unpublished_keys(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM signing_keys WHERE publish_until <= now()")
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshRow {
    pub id: Uuid,
    pub family_id: Uuid,
    pub user_id: Uuid,
    pub expires_at: DateTime<Utc>,
    /// The absolute deadline of its session, fixed at login.
    pub family_expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A refresh token to store: whose, in which session, and until when.
#[derive(Debug, Clone, Copy)]
pub struct NewRefreshToken<'a> {
    pub family_id: Uuid,
    pub user_id: Uuid,
    pub token_hash: &'a [u8],
    pub expires_at: DateTime<Utc>,
    pub family_expires_at: DateTime<Utc>,
}

pub async fn insert_refresh_token(
    tx: &mut PgConnection,
    token: NewRefreshToken<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens
             (id, family_id, user_id, token_hash, expires_at, family_expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(token.family_id)
    .bind(token.user_id)
    .bind(token.token_hash)
    .bind(token.expires_at)
    .bind(token.family_expires_at)
    .execute(tx)
    .await?;
    Ok(())
}

/// The token with this hash, locked until the transaction ends, so two refreshes with one token
/// are judged one after the other.
pub async fn lock_refresh_token(
    tx: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<RefreshRow>, sqlx::Error> {
    sqlx::query_as::<Postgres, RefreshRow>(
        "SELECT id, family_id, user_id, expires_at, family_expires_at, used_at, revoked_at
           FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(token_hash)
    .fetch_optional(tx)
    .await
}

pub async fn mark_refresh_token_used(tx: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE id = $1")
        .bind(id)
        .execute(tx)
        .await?;
    Ok(())
}

pub async fn revoke_family(
    executor: impl sqlx::PgExecutor<'_>,
    family_id: Uuid,
) -> Result<u64, sqlx::Error> {
    let revoked = sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now()
          WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family_id)
    .execute(executor)
    .await?;
    Ok(revoked.rows_affected())
}

/// Revokes the session (family) of the token with this hash: holding the token is the right
/// to end its session, whether or not an access token is still valid.
pub async fn revoke_session(pool: &PgPool, token_hash: &[u8]) -> Result<u64, sqlx::Error> {
    let revoked = sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now()
          WHERE revoked_at IS NULL AND family_id = (
              SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
    )
    .bind(token_hash)
    .execute(pool)
    .await?;
    Ok(revoked.rows_affected())
}

pub async fn revoke_all_sessions_of_user(pool: &PgPool, user_id: Uuid) -> Result<u64, sqlx::Error> {
    let revoked = sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .execute(pool)
    .await?;
    Ok(revoked.rows_affected())
}

/// Forgets refresh tokens that expired more than `kept_for` ago; reuse of those is no longer
/// detectable, but they are refused as unknown all the same.
pub async fn delete_expired_refresh_tokens(
    pool: &PgPool,
    kept_for: Duration,
) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query(
        "DELETE FROM refresh_tokens WHERE expires_at < now() - ($1::bigint * interval '1 second')",
    )
    .bind(seconds(kept_for))
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

/// Counts one event in `bucket`'s fixed window of `length`, starting a new window when the old
/// one is over. Returns the window (count included this event) and the database's `now()`.
pub async fn count_in_window(
    pool: &PgPool,
    bucket: &str,
    length: Duration,
) -> Result<(ThrottleWindow, DateTime<Utc>), sqlx::Error> {
    let (started_at, count, now): (DateTime<Utc>, i32, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO login_throttle AS t (bucket, window_start, count) VALUES ($1, now(), 1)
         ON CONFLICT (bucket) DO UPDATE SET
             window_start = CASE WHEN t.window_start + ($2::bigint * interval '1 second') <= now()
                                 THEN now() ELSE t.window_start END,
             count = CASE WHEN t.window_start + ($2::bigint * interval '1 second') <= now()
                          THEN 1 ELSE t.count + 1 END
         RETURNING window_start, count, now()",
    )
    .bind(bucket)
    .bind(seconds(length))
    .fetch_one(pool)
    .await?;
    let window = ThrottleWindow {
        started_at,
        count: u32::try_from(count).unwrap_or(u32::MAX),
    };
    Ok((window, now))
}

/// Takes one event back out of `bucket`, if its window is still the one that counted it.
pub async fn refund_in_window(
    pool: &PgPool,
    bucket: &str,
    window_start: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE login_throttle SET count = count - 1
          WHERE bucket = $1 AND window_start = $2 AND count > 0",
    )
    .bind(bucket)
    .bind(window_start)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn reset_bucket(pool: &PgPool, bucket: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_throttle WHERE bucket = $1")
        .bind(bucket)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn delete_finished_windows(pool: &PgPool, length: Duration) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query(
        "DELETE FROM login_throttle
          WHERE window_start + ($1::bigint * interval '1 second') <= now()",
    )
    .bind(seconds(length))
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
