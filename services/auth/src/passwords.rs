//! Argon2id password hashing, off the async runtime and bounded in parallelism.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::{OnceCell, Semaphore};

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("argon2: {0}")]
    Argon2(String),
    #[error("the hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the hasher is shut down")]
    Closed,
}

/// Hashes and verifies passwords on tokio's blocking pool. Each hash holds ~19 MiB for tens of
/// milliseconds, so at most `max_parallel` run at once: a login flood queues instead of
/// exhausting memory or the blocking pool.
#[derive(Debug, Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// Verified against when the e-mail address is unknown, so that answer takes as long as a
    /// wrong password does.
    decoy: Arc<OnceCell<String>>,
}

impl Passwords {
    pub fn new(max_parallel: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_parallel.max(1))),
            decoy: Arc::new(OnceCell::new()),
        }
    }

    /// Sized to the machine: two hashes per core.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self::new(cores * 2)
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) with a random salt.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.blocking(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|error| PasswordError::Argon2(error.to_string()))
        })
        .await
    }

    /// Whether `password` matches `hash`. With no hash (unknown account) it still does the work
    /// of one verification, then answers false.
    pub async fn verify(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, PasswordError> {
        let (hash, genuine) = match hash {
            Some(hash) => (hash, true),
            None => (self.decoy().await?, false),
        };
        let matches = self
            .blocking(move || {
                Ok(Argon2::default()
                    .verify_password(password.as_bytes(), hash.as_str())
                    .is_ok())
            })
            .await?;
        Ok(genuine && matches)
    }

    async fn decoy(&self) -> Result<String, PasswordError> {
        self.decoy
            .get_or_try_init(|| self.hash(uuid::Uuid::new_v4().to_string()))
            .await
            .cloned()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Closed)?;
        tokio::task::spawn_blocking(work).await?
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let passwords = Passwords::new(2);
        let hash = passwords.hash("correct horse".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(
            passwords
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify("wrong horse".into(), Some(hash))
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn the_same_password_hashes_differently_each_time() {
        let passwords = Passwords::new(2);
        let a = passwords.hash("same".into()).await.expect("hash");
        let b = passwords.hash("same".into()).await.expect("hash");
        assert_ne!(a, b, "random salts");
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies_and_still_costs_a_hash() {
        let passwords = Passwords::new(2);
        // The decoy is made on first use; warm it so the timing below is of a verification.
        passwords.decoy().await.expect("decoy");
        let started = Instant::now();
        assert!(
            !passwords
                .verify("anything".into(), None)
                .await
                .expect("verify")
        );
        let decoy_time = started.elapsed();
        let hash = passwords.hash("anything".into()).await.expect("hash");
        let started = Instant::now();
        passwords
            .verify("wrong".into(), Some(hash))
            .await
            .expect("verify");
        let real_time = started.elapsed();
        // Both are one argon2 run. Only the direction that would leak is checked (an unknown
        // address answering much faster), with room for a busy 2-core machine.
        assert!(
            decoy_time * 10 > real_time,
            "decoy {decoy_time:?} vs real {real_time:?}"
        );
    }

    #[tokio::test]
    async fn a_malformed_stored_hash_is_a_mismatch_not_a_crash() {
        let passwords = Passwords::new(1);
        assert!(
            !passwords
                .verify("x".into(), Some("not a phc string".into()))
                .await
                .expect("verify")
        );
    }
}
