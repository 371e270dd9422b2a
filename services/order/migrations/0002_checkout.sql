ALTER TABLE orders
    ADD COLUMN shipping_address TEXT NOT NULL DEFAULT '',
    ADD COLUMN rejected_sku TEXT,
    ADD COLUMN stock_committed BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN payment_captured BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN refunded BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN deadline_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN idempotency_key TEXT,
    -- A digest of the checkout request, so a reused key with a different request is refused.
    ADD COLUMN request_digest TEXT;

-- A retried checkout with the same Idempotency-Key finds the order it created.
CREATE UNIQUE INDEX orders_idempotency ON orders (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- The deadline worker's queue.
CREATE INDEX orders_pending_by_deadline ON orders (deadline_at) WHERE status = 'pending';

CREATE TABLE order_lines (
    order_id         UUID NOT NULL REFERENCES orders (id),
    sku              TEXT NOT NULL,
    name             TEXT NOT NULL,
    quantity         INT NOT NULL CHECK (quantity > 0),
    unit_price_minor BIGINT NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, sku)
);

-- Every status an order went through, for the live status stream.
CREATE TABLE order_status_history (
    id       BIGSERIAL PRIMARY KEY,
    order_id UUID NOT NULL REFERENCES orders (id),
    status   TEXT NOT NULL,
    reason   TEXT,
    at       TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX order_status_history_by_order ON order_status_history (order_id, id);

-- The order service's own replica of the catalog, built from ProductSnapshot events; checkout
-- prices from it and never asks the product service.
CREATE TABLE catalog_replica (
    sku          TEXT PRIMARY KEY,
    product_id   TEXT NOT NULL,
    product_name TEXT NOT NULL,
    variant_name TEXT NOT NULL,
    price_minor  BIGINT NOT NULL CHECK (price_minor >= 0),
    currency     CHAR(3) NOT NULL,
    available    BOOLEAN NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX catalog_replica_by_product ON catalog_replica (product_id);

CREATE TABLE cart_items (
    user_id  UUID NOT NULL,
    sku      TEXT NOT NULL,
    quantity INT NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    added_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, sku)
);
