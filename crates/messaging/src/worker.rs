//! A background worker that takes work from its database in rounds: deadlines, expiries, due
//! payments and e-mails, housekeeping.
//!
//! A round that found a full batch runs again at once; otherwise the worker sleeps until its
//! interval passes or, when it has a wake-up channel, until a transaction announces new work
//! with NOTIFY. A failed round is logged and tried again after the interval. Rounds must be safe
//! with several instances running: claim rows with `FOR UPDATE SKIP LOCKED` or a lease.

use std::future::Future;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgNotification};
use tokio_util::sync::CancellationToken;

/// What a round found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// A full batch: there may be more, so the next round starts at once.
    Busy,
    /// Less than a batch: wait for the interval or a wake-up.
    Idle,
}

impl Round {
    /// `Busy` when `done` filled the batch of `limit`.
    pub fn of(done: usize, limit: i64) -> Self {
        if i64::try_from(done).is_ok_and(|done| done >= limit) {
            Self::Busy
        } else {
            Self::Idle
        }
    }
}

/// Whether `rows` (what follows `FROM` in a select: a table and its condition) has any row.
/// One statement without a transaction: a round that looks with it first, and opens its
/// transaction only when there is work, costs one round trip when nothing is due (nearly every
/// round of a deadline or expiry sweep) rather than three (BEGIN, a locking select, COMMIT).
pub async fn any_due(pool: &PgPool, rows: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM {rows})"
    )))
    .fetch_one(pool)
    .await
}

/// Runs rounds of one kind of work until shutdown.
#[derive(Debug, Clone)]
pub struct PollingWorker {
    name: &'static str,
    interval: Duration,
    wake_channel: Option<&'static str>,
}

impl PollingWorker {
    pub fn new(name: &'static str, interval: Duration) -> Self {
        Self {
            name,
            interval,
            wake_channel: None,
        }
    }

    /// Also wake when `channel` is notified: new work then starts at once instead of after the
    /// interval, which remains the fallback for a lost notification.
    pub fn woken_by(mut self, channel: &'static str) -> Self {
        self.wake_channel = Some(channel);
        self
    }

    pub async fn run<F, Fut, E>(
        self,
        pool: PgPool,
        shutdown: CancellationToken,
        mut round: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Round, E>>,
        E: std::fmt::Display,
    {
        let mut listener = match self.wake_channel {
            Some(channel) => self.listen(&pool, channel).await,
            None => None,
        };
        while !shutdown.is_cancelled() {
            match round().await {
                Ok(Round::Busy) => continue,
                Ok(Round::Idle) => {}
                Err(error) => {
                    tracing::warn!(worker = self.name, error = %error, "round failed; retrying")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.interval) => {}
                woken = wake_up(listener.as_mut()) => {
                    // A lost connection answers at once (and reconnects on the next call): wait
                    // the interval rather than spin while the database is away.
                    if !woken {
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(self.interval) => {}
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A listener on `channel`; `None` (polling only) while the database refuses one.
    async fn listen(&self, pool: &PgPool, channel: &'static str) -> Option<PgListener> {
        match listen(pool, channel).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(worker = self.name, channel, %error, "cannot listen; polling only");
                None
            }
        }
    }
}

async fn listen(pool: &PgPool, channel: &'static str) -> Result<PgListener, sqlx::Error> {
    let mut listener = platform::db::listener(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// When a loop that also does other things (a consumer fetching) should look at its database:
/// when `channel` is notified, when its listening connection was lost (what was announced
/// meanwhile is gone), and every `interval` as the fallback. Cancel-safe: it can be one branch
/// of a `select!` that other branches win most of the time, without its interval restarting.
#[derive(Debug)]
pub struct Wakeups {
    channel: &'static str,
    listener: Option<PgListener>,
    fallback: tokio::time::Interval,
}

impl Wakeups {
    /// Listens on `channel`; while the database refuses, the fallback ticks try again. The first
    /// wake-up is at once.
    pub async fn new(pool: &PgPool, channel: &'static str, interval: Duration) -> Self {
        let mut fallback = tokio::time::interval(interval);
        fallback.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wakeups = Self {
            channel,
            listener: None,
            fallback,
        };
        wakeups.listen_again(pool).await;
        wakeups
    }

    async fn listen_again(&mut self, pool: &PgPool) {
        match listen(pool, self.channel).await {
            Ok(listener) => self.listener = Some(listener),
            Err(error) => {
                tracing::warn!(channel = self.channel, %error, "cannot listen; looking at the fallback interval");
            }
        }
    }

    /// Resolves when it is time to look.
    pub async fn next(&mut self, pool: &PgPool) {
        let Some(listener) = self.listener.as_mut() else {
            self.fallback.tick().await;
            self.listen_again(pool).await;
            return;
        };
        tokio::select! {
            _ = self.fallback.tick() => {}
            notification = next_notification(listener) => match notification {
                // Ok(None): the connection was lost; the next call reconnects.
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(channel = self.channel, %error, "listener failed; looking at the fallback interval");
                    self.listener = None;
                }
            },
        }
    }
}

/// Resolves on a notification (`true`) or a lost connection (`false`); never without a listener.
async fn wake_up(listener: Option<&mut PgListener>) -> bool {
    match listener {
        Some(listener) => matches!(next_notification(listener).await, Ok(Some(_))),
        None => std::future::pending().await,
    }
}

/// `listener`'s next notification (as [`PgListener::try_recv`]), with every other one that has
/// already arrived consumed too. A notification is only a wake-up, delivered after its commit:
/// the one look at the database that follows sees all their work. Left queued, each would wake
/// a round of its own, most of them finding nothing, their work taken by the round they were
/// announced during. Cancel-safe as `try_recv` is: the draining does not wait.
pub(crate) async fn next_notification(
    listener: &mut PgListener,
) -> Result<Option<PgNotification>, sqlx::Error> {
    use futures::FutureExt;
    let notification = listener.try_recv().await;
    if matches!(notification, Ok(Some(_))) {
        // The look that finds nothing arrived is dropped half-way, which `try_recv` allows.
        while let Some(Ok(Some(_))) = listener.try_recv().now_or_never() {}
    }
    notification
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_batch_is_busy_and_anything_less_idle() {
        assert_eq!(Round::of(100, 100), Round::Busy);
        assert_eq!(Round::of(99, 100), Round::Idle);
        assert_eq!(Round::of(0, 100), Round::Idle);
    }
}
