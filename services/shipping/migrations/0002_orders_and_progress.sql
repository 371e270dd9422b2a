-- What shipping learns from OrderCreated: where an order goes and what is in it, so a paid order
-- is shipped without asking the order service.
CREATE TABLE orders (
    order_id         UUID PRIMARY KEY,
    shipping_address TEXT NOT NULL,
    item_count       INT NOT NULL CHECK (item_count >= 0),
    lines            JSONB NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE shipments
    ADD COLUMN shipping_address TEXT NOT NULL DEFAULT '',
    ADD COLUMN item_count INT NOT NULL DEFAULT 0,
    ADD COLUMN dispatched_at TIMESTAMPTZ,
    ADD COLUMN delivered_at TIMESTAMPTZ,
    ADD CONSTRAINT shipments_known_status CHECK (status IN ('scheduled', 'dispatched', 'delivered'));

CREATE INDEX shipments_by_status ON shipments (status, created_at DESC);
