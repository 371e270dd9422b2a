//! Creating accounts: self-registration over HTTP and `create-admin` on the command line take
//! the same path, so both publish UserRegistered.

use chrono::{DateTime, Utc};
use events::{Event, TraceParent};
use messaging::outbox::{self, Cause};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{self, InsertUserError};
use crate::domain::{self, NewAccount};
use crate::passwords::Passwords;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterFailure {
    #[error("an account with this e-mail address already exists")]
    DuplicateEmail,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Hashes the password, inserts the account and appends UserRegistered to the outbox in the
/// same transaction: the event exists exactly when the account does. A taken address costs the
/// same work (the hash, the insert) as a free one, so the time taken does not tell them apart.
pub async fn register(
    pool: &PgPool,
    passwords: &Passwords,
    account: &NewAccount,
    roles: Vec<String>,
    trace: Option<&TraceParent>,
) -> Result<Registered, RegisterFailure> {
    let hash = passwords
        .hash(account.password.clone())
        .await
        .map_err(anyhow::Error::from)?;
    let id = Uuid::now_v7();
    let mut tx = pool.begin().await.map_err(anyhow::Error::from)?;
    let created_at = match db::insert_user(&mut tx, id, account, &hash, &roles).await {
        Ok(at) => at,
        Err(InsertUserError::DuplicateEmail) => return Err(RegisterFailure::DuplicateEmail),
        Err(InsertUserError::Database(error)) => return Err(anyhow::Error::from(error).into()),
    };
    let event = Event::UserRegistered(domain::user_registered(id, account, created_at));
    outbox::publish(&mut tx, &event, Cause::Origin(trace))
        .await
        .map_err(anyhow::Error::from)?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    tracing::info!(user_id = %id, "account registered");
    Ok(Registered {
        id,
        email: account.email.clone(),
        name: account.name.clone(),
        roles,
        created_at,
    })
}
