-- The shipment of an order as the shipping service's events describe it, shown on the order.
-- Details stay empty until ShipmentScheduled has been read.
CREATE TABLE order_shipments (
    order_id        UUID PRIMARY KEY REFERENCES orders (id),
    shipment_id     TEXT NOT NULL,
    carrier         TEXT,
    tracking_number TEXT,
    pickup_date     DATE,
    status          TEXT NOT NULL CHECK (status IN ('scheduled', 'dispatched', 'delivered')),
    dispatched_at   TIMESTAMPTZ,
    delivered_at    TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
