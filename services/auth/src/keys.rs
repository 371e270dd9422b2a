//! The signing keys in the database: the active one signs, retired ones stay in the JWKS until
//! the tokens they signed have expired.

use std::time::Duration;

use anyhow::Context;
use auth_kit::keys::{SigningKey, jwks_json};
use auth_kit::{JwksFuture, JwksSource};
use chrono::Utc;
use sqlx::PgPool;

use crate::db;
use crate::domain::key_publish_until;

/// The key new tokens are signed with, creating the first one if the database has none.
/// Instances racing here agree on one key: the database admits a single active key.
pub async fn active_signing_key(pool: &PgPool) -> anyhow::Result<SigningKey> {
    for _ in 0..3 {
        if let Some(row) = db::active_key(pool).await? {
            return SigningKey::from_pkcs8(row.kid, &row.private_key)
                .context("the active signing key in the database is unusable");
        }
        let key = SigningKey::generate()?;
        if db::insert_active_key(pool, key.kid(), key.pkcs8_der()).await? {
            tracing::info!(kid = key.kid(), "created a signing key");
            return Ok(key);
        }
    }
    anyhow::bail!("no active signing key after three attempts")
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub retired: Option<String>,
    pub active: String,
    pub retired_published_until: chrono::DateTime<Utc>,
}

/// Retires the active key and makes a new one, in one transaction. The retired key stays in the
/// JWKS for `access_ttl` plus a grace period, so tokens it signed keep verifying until they
/// expire.
pub async fn rotate(pool: &PgPool, access_ttl: Duration) -> anyhow::Result<Rotation> {
    let key = SigningKey::generate()?;
    let publish_until = key_publish_until(Utc::now(), access_ttl);
    let mut tx = pool.begin().await?;
    let retired = db::retire_active_key(&mut tx, publish_until).await?;
    db::insert_active_key(&mut *tx, key.kid(), key.pkcs8_der()).await?;
    tx.commit().await?;
    tracing::info!(retired = ?retired, active = key.kid(), "rotated the signing key");
    Ok(Rotation {
        retired,
        active: key.kid().to_owned(),
        retired_published_until: publish_until,
    })
}

/// The JWKS document: the public half of every published key.
pub async fn jwks(pool: &PgPool) -> anyhow::Result<String> {
    let keys = db::published_keys(pool)
        .await?
        .into_iter()
        .map(|row| SigningKey::from_pkcs8(row.kid, &row.private_key))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(jwks_json(keys.iter().map(SigningKey::public_jwk)))
}

/// Lets the auth service verify its own tokens from its database instead of over HTTP.
#[derive(Debug, Clone)]
pub struct DatabaseJwks {
    pool: PgPool,
}

impl DatabaseJwks {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl JwksSource for DatabaseJwks {
    fn fetch(&self) -> JwksFuture<'_> {
        Box::pin(async move { jwks(&self.pool).await.map_err(|error| format!("{error:#}")) })
    }
}
