//! The notification service's reactions: it learns customers and orders from user and order
//! events, turns lifecycle events into notices inside the consumer's transaction, and a sender
//! worker mails them afterwards. `notification_rules` decides, `db` stores.

use std::sync::Arc;
use std::time::Duration;

use messaging::worker::{PollingWorker, Round};
use messaging::{EventHandler, HandlerError, ReceivedEvent};
use sqlx::PgConnection;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::DeliverySettings;
use crate::db::{self, DueEmail, Source};
use crate::mail::{MailError, Mailer};
use notification_rules::{
    Attempt, EmailState, EmailStatus, NoticeBook, NotificationInput, OrderFacts, RetryPolicy,
};

/// Topics the notification service consumes: declared with its rules.
pub const TOPICS: &[&str] = notification_rules::SUBSCRIPTIONS;

#[derive(Debug)]
pub struct NotificationHandler {
    /// Ends every Message-ID (the sender's domain).
    pub message_domain: String,
}

fn parse_id(what: &str, text: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(text)
        .map_err(|_| HandlerError::Rejected(anyhow::anyhow!("{what} {text:?} is not a UUID")))
}

/// One event's part in a batch, its ids parsed.
enum Step<'a> {
    Customer {
        user_id: Uuid,
        email: &'a str,
        display_name: &'a str,
    },
    Order {
        order_id: Uuid,
        user_id: Uuid,
        facts: OrderFacts,
    },
    Lifecycle {
        order_id: Uuid,
        received: &'a ReceivedEvent,
    },
}

impl EventHandler for NotificationHandler {
    fn handles(&self, event: &events::Event) -> bool {
        notification_rules::HANDLES.contains(&event.event_type())
    }

    /// The whole batch in three statements whatever its size: the locks of its orders (in id
    /// order, see `db::lock_orders`), what is known of the orders it notices, then the orders
    /// learnt and the notices with their e-mails in one; the events are applied in memory in
    /// between ([`NoticeBook`]). Customers (a topic of their own) are an upsert each.
    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[&ReceivedEvent],
    ) -> Result<(), HandlerError> {
        let mut steps = Vec::with_capacity(events.len());
        for received in events {
            let Some(input) = notification_rules::input_of(&received.event) else {
                continue;
            };
            steps.push(match input {
                NotificationInput::Customer {
                    user_id,
                    email,
                    display_name,
                } => Step::Customer {
                    user_id: parse_id("user id", user_id)?,
                    email,
                    display_name,
                },
                NotificationInput::Order {
                    order_id,
                    user_id,
                    facts,
                } => Step::Order {
                    order_id: parse_id("order id", order_id)?,
                    user_id: parse_id("user id", user_id)?,
                    facts,
                },
                NotificationInput::Lifecycle { order_id } => Step::Lifecycle {
                    order_id: parse_id("order id", order_id)?,
                    received,
                },
            });
        }
        let mut orders = Vec::new();
        let mut noticing = Vec::new();
        for step in &steps {
            match step {
                Step::Customer {
                    user_id,
                    email,
                    display_name,
                } => db::remember_customer(tx, *user_id, email, display_name).await?,
                Step::Order { order_id, .. } => orders.push(*order_id),
                Step::Lifecycle { order_id, .. } => {
                    orders.push(*order_id);
                    noticing.push(*order_id);
                }
            }
        }
        if orders.is_empty() {
            return Ok(());
        }
        db::lock_orders(tx, &orders).await?;
        let mut book = NoticeBook::new(db::known_orders(tx, &noticing).await?);
        let mut notices = Vec::new();
        for step in &steps {
            match step {
                Step::Customer { .. } => {}
                Step::Order {
                    order_id,
                    user_id,
                    facts,
                } => book.remember(order_id, user_id, facts),
                Step::Lifecycle { order_id, received } => {
                    let Some((user_id, notice)) = book.notice(order_id, &received.event) else {
                        continue;
                    };
                    let source = Source {
                        event_id: received.metadata.event_id,
                        occurred_at: received.metadata.occurred_at,
                        message_id: notification_rules::message_id(
                            received.metadata.event_id,
                            &self.message_domain,
                        ),
                    };
                    notices.push(db::NewNotice {
                        order_id: *order_id,
                        user_id,
                        notice,
                        source,
                    });
                }
            }
        }
        let stored = db::record(tx, book.remembered(), &notices).await?;
        for (new, _) in notices.iter().zip(stored).filter(|(_, stored)| *stored) {
            tracing::info!(order_id = %new.order_id, kind = %new.notice.kind, addressed = new.user_id.is_some(), "notice recorded");
        }
        Ok(())
    }
}

/// Mails pending notices until shutdown. Sending never runs inside a database transaction: an
/// e-mail is claimed with a lease, sent, and only then marked sent; a refused one is retried
/// after a growing delay, for as long as it takes.
pub async fn run_sender(
    pool: PgPool,
    mailer: Arc<Mailer>,
    settings: DeliverySettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let lease = Duration::from_millis(settings.lease_ms);
    let policy = RetryPolicy {
        initial: Duration::from_millis(settings.retry_initial_ms),
        max: Duration::from_millis(settings.retry_max_ms),
    };
    PollingWorker::new("mail sender", Duration::from_millis(settings.poll_ms))
        .woken_by(db::MAIL_CHANNEL)
        .run(pool.clone(), shutdown, || async {
            let claimed = db::claim_due_emails(&pool, settings.batch_size, lease).await?;
            let sends = claimed
                .iter()
                .map(|email| send_one(&pool, &mailer, &policy, lease, email));
            futures::future::join_all(sends).await;
            // Busy only with a full batch: e-mails queued meanwhile announced themselves on
            // MAIL_CHANNEL, and the worker's listener kept that wake-up for the next wait. An
            // empty round after every send was one claim statement per e-mail.
            Ok::<_, sqlx::Error>(Round::of(claimed.len(), settings.batch_size))
        })
        .await
}

async fn send_one(
    pool: &PgPool,
    mailer: &Mailer,
    policy: &RetryPolicy,
    lease: Duration,
    email: &DueEmail,
) {
    // Half the lease: the claim is still ours when the outcome is recorded, so no other worker
    // can start the same e-mail while this one is in flight.
    let outcome = match mailer.build(email) {
        Ok(message) => tokio::time::timeout(
            lease / 2,
            mailer.deliver(&email.source_event_id.to_string(), &message),
        )
        .await
        .unwrap_or_else(|_| Err(MailError::Refused("timed out".into()))),
        Err(error) => Err(error),
    };
    let (attempt, error) = match &outcome {
        Ok(()) => (Attempt::Accepted, None),
        Err(MailError::Unsendable(reason)) => (Attempt::Unsendable, Some(reason.clone())),
        Err(MailError::Refused(reason)) => (Attempt::Refused, Some(reason.clone())),
    };
    let state = EmailState {
        status: EmailStatus::Pending,
        attempts: u32::try_from(email.attempts).unwrap_or(0),
    };
    let after = notification_rules::after_attempt(state, attempt, policy);
    match attempt {
        Attempt::Accepted => {
            metrics::counter!("notification_emails_sent_total").increment(1);
            let delay = chrono::Utc::now() - email.created_at;
            metrics::histogram!("notification_email_delay_seconds")
                .record(delay.num_milliseconds() as f64 / 1000.0);
            tracing::info!(message_id = %email.message_id, attempts = after.state.attempts, "e-mail sent");
        }
        Attempt::Refused => {
            metrics::counter!("notification_email_failures_total").increment(1);
            tracing::warn!(message_id = %email.message_id, error = error.as_deref().unwrap_or(""), attempts = after.state.attempts, retry_in = ?after.retry_in, "e-mail not taken; will retry");
        }
        Attempt::Unsendable => {
            metrics::counter!("notification_emails_unsendable_total").increment(1);
            tracing::error!(message_id = %email.message_id, error = error.as_deref().unwrap_or(""), "e-mail can never be sent as it is; giving up");
        }
    }
    // If this write is lost the lease lapses and the e-mail is sent again with the same
    // Message-ID, which is as good as exactly once for the receiver.
    if let Err(error) =
        db::record_attempt(pool, email.notification_id, &after, error.as_deref()).await
    {
        tracing::warn!(message_id = %email.message_id, %error, "recording the attempt failed");
    }
}
