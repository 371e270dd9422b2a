//! Sessions: an access token (JWT) plus a rotating refresh token. A login starts a family of
//! refresh tokens; each refresh retires the presented token and issues its successor, which
//! never outlives the session's absolute deadline (fixed at login).

use std::time::Duration;

use auth_kit::{AuthSettings, Claims};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::TokenSettings;
use crate::db::{self, NewRefreshToken, UserRow};
use crate::domain::{self, RefreshDecision, RefreshTokenState, decide_refresh};

/// What login and refresh answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    /// A JWT (EdDSA) to send as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Single use: exchange it at `/api/auth/refresh` for a new pair.
    pub refresh_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshFailure {
    /// Unknown, expired, revoked or reused: all look the same to the client.
    #[error("the refresh token is not valid ({0})")]
    Invalid(&'static str),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for RefreshFailure {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(error.into())
    }
}

#[derive(Debug, Clone)]
pub struct Sessions {
    auth: AuthSettings,
    access_ttl: Duration,
    refresh_ttl: Duration,
    session_ttl: Duration,
}

impl Sessions {
    pub fn new(auth: AuthSettings, tokens: &TokenSettings) -> Self {
        Self {
            auth,
            access_ttl: Duration::from_secs(tokens.access_ttl_secs),
            refresh_ttl: Duration::from_secs(tokens.refresh_ttl_secs),
            session_ttl: Duration::from_secs(tokens.refresh_absolute_ttl_secs),
        }
    }

    /// Starts a new session (refresh-token family) for a user who just proved their password.
    pub async fn start(&self, pool: &PgPool, user: &UserRow) -> anyhow::Result<TokenPair> {
        let refresh_token = new_refresh_token()?;
        let now = Utc::now();
        let deadline = domain::session_deadline(now, self.session_ttl);
        let mut tx = pool.begin().await?;
        db::insert_refresh_token(
            &mut tx,
            NewRefreshToken {
                family_id: Uuid::now_v7(),
                user_id: user.id,
                token_hash: &hash_refresh_token(&refresh_token),
                expires_at: domain::refresh_token_expiry(now, self.refresh_ttl, deadline),
                family_expires_at: deadline,
            },
        )
        .await?;
        tx.commit().await?;
        self.pair(pool, user, refresh_token).await
    }

    /// Exchanges a refresh token for a new pair. Presenting a token that was already exchanged
    /// revokes its whole family: one of the two holders is not the user.
    pub async fn refresh(
        &self,
        pool: &PgPool,
        presented: &str,
    ) -> Result<TokenPair, RefreshFailure> {
        let mut tx = pool.begin().await?;
        let Some(stored) = db::lock_refresh_token(&mut tx, &hash_refresh_token(presented)).await?
        else {
            return Err(RefreshFailure::Invalid("unknown"));
        };
        let state = RefreshTokenState {
            expires_at: stored.expires_at,
            used_at: stored.used_at,
            revoked_at: stored.revoked_at,
        };
        match decide_refresh(state, Utc::now()) {
            RefreshDecision::Rotate => {}
            RefreshDecision::Reused => {
                let revoked = db::revoke_family(&mut *tx, stored.family_id).await?;
                tx.commit().await?;
                tracing::warn!(
                    user_id = %stored.user_id,
                    family_id = %stored.family_id,
                    revoked,
                    "a refresh token was reused; its session is revoked"
                );
                return Err(RefreshFailure::Invalid("reused"));
            }
            RefreshDecision::Revoked => return Err(RefreshFailure::Invalid("revoked")),
            RefreshDecision::Expired => return Err(RefreshFailure::Invalid("expired")),
        }
        let user = db::find_user(&mut *tx, stored.user_id)
            .await?
            .ok_or(RefreshFailure::Invalid("no such user"))?;
        let successor = new_refresh_token()?;
        db::mark_refresh_token_used(&mut tx, stored.id).await?;
        db::insert_refresh_token(
            &mut tx,
            NewRefreshToken {
                family_id: stored.family_id,
                user_id: user.id,
                token_hash: &hash_refresh_token(&successor),
                expires_at: domain::refresh_token_expiry(
                    Utc::now(),
                    self.refresh_ttl,
                    stored.family_expires_at,
                ),
                family_expires_at: stored.family_expires_at,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(self.pair(pool, &user, successor).await?)
    }

    async fn pair(
        &self,
        pool: &PgPool,
        user: &UserRow,
        refresh_token: String,
    ) -> anyhow::Result<TokenPair> {
        let key = crate::keys::active_signing_key(pool).await?;
        let claims = Claims::new(
            &self.auth,
            user.id,
            &user.email,
            user.roles.clone(),
            self.access_ttl,
        );
        Ok(TokenPair {
            access_token: key.sign(&claims)?,
            refresh_token,
            token_type: "Bearer",
            expires_in: self.access_ttl.as_secs(),
        })
    }
}

/// 256 random bits, base64url: unguessable, so storing a plain SHA-256 of it is enough.
fn new_refresh_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| anyhow::anyhow!("random source: {error}"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_long_random_and_hashed_stably() {
        let a = new_refresh_token().expect("token");
        let b = new_refresh_token().expect("token");
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(hash_refresh_token(&a), hash_refresh_token(&a));
        assert_ne!(hash_refresh_token(&a), hash_refresh_token(&b));
        assert_eq!(hash_refresh_token(&a).len(), 32);
    }
}
