-- The messaging runtime's tables, present in every service database. Applied with their own
-- migrations table (_messaging_migrations), so service migrations keep their own numbering.

-- Events waiting to be published. A row is written in the same transaction as the state change
-- that caused it; the relay publishes it and only then sets published_at.
CREATE TABLE messaging_outbox (
    id             BIGSERIAL PRIMARY KEY,
    event_id       UUID NOT NULL UNIQUE,
    -- Logical topic; the relay prepends the deployment's topic prefix.
    topic          TEXT NOT NULL,
    message_key    TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    -- 'avro': a datum of the topic's union schema, framed by the relay with its registered id.
    -- 'raw': bytes sent as they are (dead letters keep the original message).
    payload_format TEXT NOT NULL CHECK (payload_format IN ('avro', 'raw')),
    payload        BYTEA NOT NULL,
    -- [[name, value], ...] in send order.
    headers        JSONB NOT NULL,
    -- clock_timestamp, not now(): publish latency is measured from the append itself.
    created_at     TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    published_at   TIMESTAMPTZ
);

CREATE INDEX messaging_outbox_pending ON messaging_outbox (id) WHERE published_at IS NULL;
CREATE INDEX messaging_outbox_published ON messaging_outbox (published_at) WHERE published_at IS NOT NULL;

-- One wake-up per transaction however many rows it appends: PostgreSQL folds identical
-- notifications raised in one transaction, and a statement trigger raises one per INSERT.
CREATE FUNCTION messaging_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('messaging_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER messaging_outbox_notify
    AFTER INSERT ON messaging_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION messaging_outbox_notify();

-- Events this service has handled. The handler's effects commit in the same transaction as the
-- row, so a redelivered event finds its id here and is skipped.
CREATE TABLE messaging_inbox (
    event_id   UUID PRIMARY KEY,
    topic      TEXT NOT NULL,
    partition  INT NOT NULL,
    "offset"   BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    handled_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

-- Keys whose processing stopped at a message that can never succeed. Later messages of a parked
-- key are parked behind it, so a key's order is never broken; other keys keep flowing.
CREATE TABLE messaging_parked_keys (
    topic                TEXT NOT NULL,
    message_key          TEXT NOT NULL,
    error                TEXT NOT NULL,
    parked_at            TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    redrive_requested_at TIMESTAMPTZ,
    PRIMARY KEY (topic, message_key)
);

-- The parked messages themselves, in arrival order (id). A copy of each also goes to the
-- topic's dead-letter topic for people and tools; this table is what a redrive replays.
CREATE TABLE messaging_parked_messages (
    id          BIGSERIAL PRIMARY KEY,
    topic       TEXT NOT NULL,
    message_key TEXT NOT NULL,
    partition   INT NOT NULL,
    "offset"    BIGINT NOT NULL,
    payload     BYTEA,
    headers     JSONB NOT NULL,
    error       TEXT NOT NULL,
    attempts    INT NOT NULL,
    parked_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (topic, partition, "offset")
);

CREATE INDEX messaging_parked_messages_by_key ON messaging_parked_messages (topic, message_key, id);
