CREATE TABLE orders (
    id          UUID PRIMARY KEY,
    user_id     UUID NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT,
    total_minor BIGINT NOT NULL CHECK (total_minor >= 0),
    currency    CHAR(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX orders_by_user ON orders (user_id, created_at DESC);
