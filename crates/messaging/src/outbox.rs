//! The transactional outbox: events are written in the caller's database transaction, so they
//! exist if and only if the state change that caused them committed. The [relay](crate::relay)
//! publishes them.

use events::{Event, EventMetadata, TraceParent};
use sqlx::PgConnection;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot encode {event_type}: {source}")]
    Encode {
        event_type: &'static str,
        #[source]
        source: events::CodecError,
    },
    #[error("database")]
    Database(#[from] sqlx::Error),
}

/// Appends `event` to the outbox within the caller's transaction.
///
/// ```ignore
/// let mut tx = pool.begin().await?;
/// // ...change state...
/// outbox::append(&mut tx, &event, &EventMetadata::originating("OrderCreated", &order_id, None)).await?;
/// tx.commit().await?;
/// ```
pub async fn append(
    tx: &mut PgConnection,
    event: &Event,
    metadata: &EventMetadata,
) -> Result<(), OutboxError> {
    insert_all(tx, &[record(event, metadata)?]).await
}

/// The outbox row of `event` with `metadata`, its payload encoded.
fn record(event: &Event, metadata: &EventMetadata) -> Result<OutboxRecord, OutboxError> {
    let payload = events::encode(event).map_err(|source| OutboxError::Encode {
        event_type: event.type_name(),
        source,
    })?;
    Ok(OutboxRecord {
        event_id: metadata.event_id,
        topic: event.topic().to_owned(),
        key: event.key(),
        event_type: event.type_name().to_owned(),
        format: PayloadFormat::Avro,
        payload,
        headers: metadata
            .to_headers()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
    })
}

/// Why an event is published, which decides its lineage.
#[derive(Debug, Clone, Copy)]
pub enum Cause<'a> {
    /// Emitted while handling this consumed event: the same correlation id and trace, and the
    /// consumed event as its causation.
    Event(&'a EventMetadata),
    /// Starts a flow: a request, carrying the caller's trace context when it sent one, or the
    /// service's own timer or worker (`None`: a new trace). The event's key is its correlation
    /// id (the order id for the checkout saga).
    Origin(Option<&'a TraceParent>),
}

impl<'a> Cause<'a> {
    /// A request, worker or timer with no trace to continue.
    pub const SERVICE: Cause<'static> = Cause::Origin(None);

    /// The metadata `event` gets when published for this cause.
    pub fn metadata(self, event: &Event) -> EventMetadata {
        match self {
            Self::Event(cause) => EventMetadata::caused_by(event.type_name(), cause),
            Self::Origin(trace) => {
                EventMetadata::originating(event.type_name(), event.key(), trace)
            }
        }
    }
}

/// Appends `event` to the outbox within the caller's transaction, with the lineage `cause`
/// gives it.
pub async fn publish(
    tx: &mut PgConnection,
    event: &Event,
    cause: Cause<'_>,
) -> Result<(), OutboxError> {
    publish_all(tx, std::slice::from_ref(event), cause).await
}

/// Appends `events`, in this order, to the outbox within the caller's transaction, each with
/// the lineage `cause` gives it: one statement for all of them, where a [`publish`] per event
/// costs a round trip each.
pub async fn publish_all(
    tx: &mut PgConnection,
    events: &[Event],
    cause: Cause<'_>,
) -> Result<(), OutboxError> {
    let caused: Vec<(&Event, Cause<'_>)> = events.iter().map(|event| (event, cause)).collect();
    append_caused(tx, &caused).await
}

/// Appends `events`, in this order, each with the lineage of its own cause, in one statement:
/// what a consumer publishes for a batch of the events it handled.
pub async fn publish_caused(
    tx: &mut PgConnection,
    events: &[(Event, Cause<'_>)],
) -> Result<(), OutboxError> {
    let caused: Vec<(&Event, Cause<'_>)> = events
        .iter()
        .map(|(event, cause)| (event, *cause))
        .collect();
    append_caused(tx, &caused).await
}

async fn append_caused(
    tx: &mut PgConnection,
    events: &[(&Event, Cause<'_>)],
) -> Result<(), OutboxError> {
    let Some((first, _)) = events.first() else {
        return Ok(());
    };
    let mut metadata: Vec<EventMetadata> = events
        .iter()
        .map(|(event, cause)| cause.metadata(event))
        .collect();
    let records = |metadata: &[EventMetadata]| {
        events
            .iter()
            .zip(metadata)
            .map(|((event, _), metadata)| record(event, metadata))
            .collect::<Result<Vec<_>, _>>()
    };
    if !platform::telemetry::exporting() {
        return insert_all(tx, &records(&metadata)?).await;
    }
    // Spans exported: the append is a span, and each event carries it as its parent, so the
    // relay's publish and every consumer's handling hang under it in the same trace (a new
    // trace when the cause had none).
    let span = tracing::info_span!(
        "outbox_append",
        event_type = first.type_name(),
        events = events.len()
    );
    if let Some(own) = platform::telemetry::trace_context(&span) {
        for (metadata, (_, cause)) in metadata.iter_mut().zip(events) {
            if own.trace_id == metadata.traceparent.trace_id || matches!(cause, Cause::Origin(None))
            {
                metadata.traceparent = TraceParent {
                    trace_id: own.trace_id,
                    span_id: own.span_id,
                    sampled: own.sampled,
                };
            }
        }
    }
    let records = records(&metadata)?;
    insert_all(tx, &records).instrument(span).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    /// A datum of the topic's union schema; the relay adds the Confluent header.
    Avro,
    /// Sent as it is.
    Raw,
}

impl PayloadFormat {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Avro => "avro",
            Self::Raw => "raw",
        }
    }
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    pub event_id: uuid::Uuid,
    /// Logical topic, without the deployment prefix.
    pub topic: String,
    pub key: String,
    pub event_type: String,
    pub format: PayloadFormat,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// Writes a prepared record; dead-lettering uses it to forward original bytes untouched.
pub async fn insert(tx: &mut PgConnection, record: &OutboxRecord) -> Result<(), OutboxError> {
    insert_all(tx, std::slice::from_ref(record)).await
}

/// Writes prepared records in one statement; their ids (the relay's order) follow the slice.
async fn insert_all(tx: &mut PgConnection, records: &[OutboxRecord]) -> Result<(), OutboxError> {
    let column = |field: fn(&OutboxRecord) -> &str| records.iter().map(field).collect::<Vec<_>>();
    let headers: Vec<sqlx::types::Json<Vec<[&str; 2]>>> = records
        .iter()
        .map(|record| {
            sqlx::types::Json(
                record
                    .headers
                    .iter()
                    .map(|(name, value)| [name.as_str(), value.as_str()])
                    .collect(),
            )
        })
        .collect();
    sqlx::query(
        "INSERT INTO messaging_outbox
            (event_id, topic, message_key, event_type, payload_format, payload, headers)
         SELECT event_id, topic, message_key, event_type, payload_format, payload, headers
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[],
                       $7::jsonb[])
                WITH ORDINALITY
                AS appended (event_id, topic, message_key, event_type, payload_format, payload,
                             headers, position)
          ORDER BY position",
    )
    .bind(
        records
            .iter()
            .map(|record| record.event_id)
            .collect::<Vec<_>>(),
    )
    .bind(column(|record| &record.topic))
    .bind(column(|record| &record.key))
    .bind(column(|record| &record.event_type))
    .bind(column(|record| record.format.as_str()))
    .bind(
        records
            .iter()
            .map(|record| record.payload.as_slice())
            .collect::<Vec<_>>(),
    )
    .bind(headers)
    .execute(tx)
    .await?;
    Ok(())
}
