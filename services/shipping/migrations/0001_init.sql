CREATE TABLE shipments (
    id              UUID PRIMARY KEY,
    order_id        UUID NOT NULL UNIQUE,
    carrier         TEXT NOT NULL,
    tracking_number TEXT NOT NULL UNIQUE,
    pickup_date     DATE NOT NULL,
    status          TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
