-- One payment per order: its saga state, and the queues of the charge and refund workers.
CREATE TABLE payments (
    order_id        TEXT PRIMARY KEY,
    -- domain::PaymentState as JSON: what is known of the order, charge and refund.
    state           JSONB NOT NULL,
    charge_status   TEXT NOT NULL,
    refund_status   TEXT NOT NULL,
    attempts        INT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A worker that claimed the row; a crashed worker's claim lapses and another retries.
    lease_until     TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX payments_charges_due ON payments (next_attempt_at) WHERE charge_status = 'due';
CREATE INDEX payments_refunds_due ON payments (next_attempt_at) WHERE refund_status = 'due';
