CREATE TABLE products (
    id          UUID PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    archived    BOOLEAN NOT NULL DEFAULT false,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Money is integer minor units plus an ISO 4217 currency code, never a float.
CREATE TABLE variants (
    sku         TEXT PRIMARY KEY,
    product_id  UUID NOT NULL REFERENCES products (id),
    name        TEXT NOT NULL,
    attributes  JSONB NOT NULL DEFAULT '{}',
    price_minor BIGINT NOT NULL CHECK (price_minor >= 0),
    currency    CHAR(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    position    INT NOT NULL DEFAULT 0
);

CREATE INDEX variants_by_product ON variants (product_id, position);
