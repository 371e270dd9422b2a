//! PostgreSQL notifications fanned out to the tasks waiting on one key: one listening
//! connection per process, however many tasks wait.
//!
//! A notification's payload is `<key> <body>`; each subscriber of `<key>` receives the body.
//! Notifications sent while the listening connection was down are lost, so after every
//! (re)connection each subscriber is told it may have missed some and must look at the
//! database again. Every instance of a service listens on its own, so a change committed by any
//! instance reaches the subscribers of all of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a subscriber hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A notification for its key, without the key.
    Notified(String),
    /// Notifications may have been lost (the listening connection was re-established): read
    /// the current state from the database.
    Missed,
}

type Subscribers = HashMap<String, Vec<(u64, mpsc::UnboundedSender<Signal>)>>;

#[derive(Debug)]
struct Shared {
    channel: &'static str,
    subscribers: Mutex<Subscribers>,
    next_id: AtomicU64,
}

impl Shared {
    fn subscribers(&self) -> MutexGuard<'_, Subscribers> {
        // A poisoned map is still a valid map: a panic elsewhere cannot half-insert a Vec push.
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Routes the notifications of one channel to the subscribers of each key. Cloning shares it.
#[derive(Debug, Clone)]
pub struct NotifyFanout {
    shared: Arc<Shared>,
}

impl NotifyFanout {
    pub fn new(channel: &'static str) -> Self {
        Self {
            shared: Arc::new(Shared {
                channel,
                subscribers: Mutex::default(),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// Starts hearing `key`'s notifications. Subscribe before reading the state from the
    /// database, so nothing committed in between goes unheard.
    pub fn subscribe(&self, key: &str) -> Subscription {
        let (sender, receiver) = mpsc::unbounded_channel();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.shared
            .subscribers()
            .entry(key.to_owned())
            .or_default()
            .push((id, sender));
        metrics::gauge!("notify_fanout_subscribers", "channel" => self.shared.channel)
            .increment(1.0);
        Subscription {
            key: key.to_owned(),
            id,
            receiver,
            shared: self.shared.clone(),
        }
    }

    /// Delivers one notification's payload to its key's subscribers.
    fn dispatch(&self, payload: &str) {
        let Some((key, body)) = payload.split_once(' ') else {
            tracing::warn!(
                channel = self.shared.channel,
                payload,
                "notification without a key"
            );
            return;
        };
        if let Some(subscribers) = self.shared.subscribers().get(key) {
            for (_, sender) in subscribers {
                // A closed receiver is removed by its Subscription's drop.
                let _ = sender.send(Signal::Notified(body.to_owned()));
            }
        }
    }

    fn tell_everyone_they_missed(&self) {
        for subscribers in self.shared.subscribers().values() {
            for (_, sender) in subscribers {
                let _ = sender.send(Signal::Missed);
            }
        }
    }

    /// Listens until `shutdown`, reconnecting after any failure.
    pub async fn run(self, pool: PgPool, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut retry_in = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let listening = async {
                let mut listener = crate::db::listener(&pool).await?;
                listener.listen(self.shared.channel).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = tokio::select! {
                () = shutdown.cancelled() => break,
                listening = listening => match listening {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::warn!(channel = self.shared.channel, %error, "cannot listen; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(retry_in) => {}
                        }
                        retry_in = (retry_in * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            retry_in = Duration::from_millis(100);
            // Whatever was committed before LISTEN took effect went unheard.
            self.tell_everyone_they_missed();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    notification = listener.try_recv() => match notification {
                        Ok(Some(notification)) => self.dispatch(notification.payload()),
                        // The connection dropped; the next try_recv reconnects and re-listens,
                        // but what was sent meanwhile is gone.
                        Ok(None) => self.tell_everyone_they_missed(),
                        Err(error) => {
                            tracing::warn!(channel = self.shared.channel, %error, "listening failed; reconnecting");
                            break;
                        }
                    },
                }
            }
        }
        Ok(())
    }
}

/// One subscriber's end; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    key: String,
    id: u64,
    receiver: mpsc::UnboundedReceiver<Signal>,
    shared: Arc<Shared>,
}

impl Subscription {
    /// The next signal; `None` once the fanout is gone.
    pub async fn recv(&mut self) -> Option<Signal> {
        self.receiver.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subscribers = self.shared.subscribers();
        if let Some(list) = subscribers.get_mut(&self.key) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                subscribers.remove(&self.key);
            }
        }
        metrics::gauge!("notify_fanout_subscribers", "channel" => self.shared.channel)
            .decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_notification_reaches_only_its_keys_subscribers() {
        let fanout = NotifyFanout::new("test");
        let mut first = fanout.subscribe("a");
        let mut second = fanout.subscribe("a");
        let mut other = fanout.subscribe("b");
        fanout.dispatch("a {\"id\":1}");
        assert_eq!(
            first.recv().await,
            Some(Signal::Notified("{\"id\":1}".into()))
        );
        assert_eq!(
            second.recv().await,
            Some(Signal::Notified("{\"id\":1}".into()))
        );
        fanout.tell_everyone_they_missed();
        assert_eq!(
            other.recv().await,
            Some(Signal::Missed),
            "b heard nothing of a's"
        );
    }

    #[tokio::test]
    async fn dropping_a_subscription_unsubscribes_it() {
        let fanout = NotifyFanout::new("test");
        let first = fanout.subscribe("a");
        let mut second = fanout.subscribe("a");
        drop(first);
        assert_eq!(fanout.shared.subscribers()["a"].len(), 1);
        fanout.dispatch("a x");
        assert_eq!(second.recv().await, Some(Signal::Notified("x".into())));
        drop(second);
        assert!(fanout.shared.subscribers().is_empty());
    }
}
