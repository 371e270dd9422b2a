-- What this service learns from other services' events, never from their databases: who a user
-- is (auth's UserRegistered) and whose an order is (order's OrderCreated).
CREATE TABLE customers (
    user_id      UUID PRIMARY KEY,
    email        TEXT NOT NULL,
    display_name TEXT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE customer_orders (
    order_id    UUID PRIMARY KEY,
    user_id     UUID NOT NULL,
    total_minor BIGINT NOT NULL,
    currency    TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- An event about an order whose OrderCreated has not been read yet (it travels on another topic,
-- which may lag) is kept without a user; OrderCreated fills the user in.
ALTER TABLE notifications
    ALTER COLUMN user_id DROP NOT NULL,
    ADD COLUMN order_id UUID,
    ADD COLUMN source_event_id UUID;

-- One notice per event, and one per kind and order even if an event is replayed under a new id.
CREATE UNIQUE INDEX notifications_once_per_event ON notifications (source_event_id);
CREATE UNIQUE INDEX notifications_once_per_order_and_kind ON notifications (order_id, kind);
CREATE INDEX notifications_without_user ON notifications (order_id) WHERE user_id IS NULL;
CREATE INDEX notifications_unread ON notifications (user_id) WHERE read_at IS NULL;

-- The e-mail of each notice. Written in the transaction that handles the event; the sender
-- worker delivers it afterwards, outside any transaction, and marks it sent once the mail server
-- (or the mail folder) has taken it.
CREATE TABLE outgoing_emails (
    notification_id UUID PRIMARY KEY REFERENCES notifications (id),
    message_id      TEXT NOT NULL UNIQUE,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        INT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until     TIMESTAMPTZ,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at         TIMESTAMPTZ
);

CREATE INDEX outgoing_emails_due ON outgoing_emails (next_attempt_at) WHERE status = 'pending';
