CREATE TABLE payment_transactions (
    id                 UUID PRIMARY KEY,
    order_id           UUID NOT NULL,
    kind               TEXT NOT NULL CHECK (kind IN ('charge', 'refund')),
    status             TEXT NOT NULL,
    amount_minor       BIGINT NOT NULL CHECK (amount_minor >= 0),
    currency           CHAR(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    provider_reference TEXT,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The database itself refuses a second successful charge for one order.
CREATE UNIQUE INDEX one_successful_charge_per_order
    ON payment_transactions (order_id)
    WHERE kind = 'charge' AND status = 'succeeded';
