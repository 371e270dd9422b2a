//! Proof that something did *not* happen: before a test asserts an absence (no second e-mail,
//! no charge), it waits, with a deadline, for positive proof that whatever could have done it
//! has done all it was going to do.
//!
//! - A consumer handles each partition in offset order and records each event in its inbox in
//!   the transaction of its effects: [`wait_until_handled`] waits until the consumer's inbox
//!   holds every event a producer appended under a key.
//! - A worker (the notification service's mail sender, the payment service's provider calls)
//!   works in rounds, one after another: claim what is due (oldest first), settle the claimed
//!   batch side by side, claim again. The proof is two marker items. The first is made due after
//!   the call began, so its round (or an earlier one) claims whatever was due then. The second
//!   is made due only once the first is done, so a later round claims it; when the second is
//!   done, the first marker's round, and every round before it, is over. [`mail_sender_rounds`]
//!   and [`Stack::payment_worker_rounds`] do that, for a service running one worker.

use std::time::Duration;

use notification_rules::{Kind, Notice};
use notification_service::db::{Source, record_notice, remember_customer};
use sqlx::PgPool;
use uuid::Uuid;

use crate::eventually;
use crate::stack::Stack;

const DEADLINE: Duration = Duration::from_secs(60);

/// Waits until the service whose database is `consumer` has handled every event the service
/// whose database is `producer` has appended to its outbox for `topic` (logical name) under
/// `key`, at least one; returns how many. Events appended later are not waited for.
pub async fn wait_until_handled(
    producer: &PgPool,
    consumer: &PgPool,
    topic: &str,
    key: &str,
) -> usize {
    eventually(
        &format!("the consumer to handle every {topic} event keyed {key}"),
        DEADLINE,
        || async {
            let appended: Vec<(Uuid,)> = sqlx::query_as(
                "SELECT event_id FROM messaging_outbox WHERE topic = $1 AND message_key = $2",
            )
            .bind(topic)
            .bind(key)
            .fetch_all(producer)
            .await
            .ok()?;
            let ids: Vec<Uuid> = appended.into_iter().map(|(id,)| id).collect();
            let (handled,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM messaging_inbox WHERE event_id = ANY($1)")
                    .bind(&ids)
                    .fetch_one(consumer)
                    .await
                    .ok()?;
            (!ids.is_empty() && usize::try_from(handled).ok()? == ids.len()).then_some(ids.len())
        },
    )
    .await
}

/// The domain of the marker e-mails' addresses and Message-IDs; no real e-mail carries it.
pub const MARKER_MAIL_DOMAIN: &str = "sender-marker.bazaar.test";

/// Whether an e-mail (its text, or its Message-ID) is one of [`mail_sender_rounds`]' markers.
pub fn is_marker_mail(text: &str) -> bool {
    text.contains(&format!("@{MARKER_MAIL_DOMAIN}>"))
}

/// Proof that the mail sender of the notification service on `pool` has attempted every e-mail
/// that was due when this was called (pending and addressed, even wrongly): two marker e-mails,
/// recorded with the service's own functions for a marker customer of their own, the second
/// only once the first is sent (see the module). Filter the markers out with
/// [`is_marker_mail`].
pub async fn mail_sender_rounds(pool: &PgPool) -> anyhow::Result<()> {
    let customer = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    remember_customer(
        &mut tx,
        customer,
        &format!("{customer}@{MARKER_MAIL_DOMAIN}"),
        "Sender marker",
    )
    .await?;
    tx.commit().await?;
    for round in 1..=2 {
        let order_id = Uuid::now_v7();
        let event_id = Uuid::now_v7();
        let message_id = format!("<{event_id}@{MARKER_MAIL_DOMAIN}>");
        let notice = Notice {
            order_id: order_id.to_string(),
            kind: Kind::OrderPaid,
            subject: format!("Sender round marker {round}"),
            body: "A marker: proof that the sender has worked through what was due.".into(),
        };
        let source = Source {
            event_id,
            occurred_at: sqlx::types::chrono::Utc::now(),
            message_id: message_id.clone(),
        };
        let mut tx = pool.begin().await?;
        anyhow::ensure!(
            record_notice(&mut tx, order_id, Some(customer), &notice, &source).await?,
            "marker notice {round} not recorded"
        );
        tx.commit().await?;
        eventually(
            &format!("marker e-mail {round} to be sent"),
            DEADLINE,
            || async {
                let (status,): (String,) =
                    sqlx::query_as("SELECT status FROM outgoing_emails WHERE message_id = $1")
                        .bind(&message_id)
                        .fetch_one(pool)
                        .await
                        .ok()?;
                (status == "sent").then_some(())
            },
        )
        .await;
    }
    Ok(())
}

impl Stack {
    /// Proof that the payment service's worker has made every provider call (charge or refund)
    /// that was due when this was called, even wrongly: two marker orders of one `sku` each, by
    /// a customer of their own, the second placed only once the first is paid (see the module).
    /// Each marker takes one of `sku` from stock for good.
    pub async fn payment_worker_rounds(&self, sku: &str) -> anyhow::Result<()> {
        let customer = self.customer();
        for _ in 0..2 {
            let marker = self.checkout(&customer, &[(sku, 1)], "tok_visa").await?;
            self.wait_for_status(&customer, &marker, &["paid", "shipping_scheduled"])
                .await;
        }
        Ok(())
    }
}
