//! Publishes events the way a service does, through a transactional outbox and a running relay,
//! for tests that need another service's events (auth's UserRegistered, say) without running
//! that service.

use events::{Event, EventMetadata};
use messaging::{Relay, RelaySettings};
use platform::config::{DatabaseSettings, KafkaSettings};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::fresh_database;

/// A database with the messaging runtime's tables, and a relay publishing its outbox.
#[derive(Debug)]
pub struct Publisher {
    pub pool: PgPool,
    shutdown: CancellationToken,
    relay: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Publisher {
    /// Publishes onto `kafka`'s topics (its prefix included).
    pub async fn start(label: &str, kafka: &KafkaSettings) -> anyhow::Result<Self> {
        let database = DatabaseSettings {
            // Appends, and the relay's batches: a stand-in needs few of the server's connections.
            max_connections: 2,
            ..fresh_database(label).await?
        };
        let pool = platform::db::connect_and_migrate(&database, &messaging::migrations::migrator())
            .await?;
        let relay = Relay::new(
            "test-publisher",
            pool.clone(),
            kafka.clone(),
            RelaySettings::default(),
        )?;
        let shutdown = CancellationToken::new();
        let relay = tokio::spawn(relay.run(shutdown.clone()));
        Ok(Self {
            pool,
            shutdown,
            relay,
        })
    }

    /// Appends `events` in one transaction, each starting a flow of its own (its key is its
    /// correlation id), and returns their metadata.
    pub async fn publish(&self, events: &[Event]) -> anyhow::Result<Vec<EventMetadata>> {
        let mut tx = self.pool.begin().await?;
        let mut sent = Vec::with_capacity(events.len());
        for event in events {
            let metadata = EventMetadata::originating(event.type_name(), event.key(), None);
            messaging::outbox::append(&mut tx, event, &metadata).await?;
            sent.push(metadata);
        }
        tx.commit().await?;
        Ok(sent)
    }

    /// Publishes every event again, byte for byte with the same event ids, as a relay that
    /// lost its acknowledgements would; returns how many.
    pub async fn republish_everything(&self) -> anyhow::Result<u64> {
        Ok(
            sqlx::query("UPDATE messaging_outbox SET published_at = NULL")
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// How many appended events the relay has not published yet.
    pub async fn unpublished(&self) -> anyhow::Result<i64> {
        Ok(crate::unpublished_outbox_rows(&self.pool).await?)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.relay.await??;
        Ok(())
    }
}
