-- Stock per SKU. The checks make overselling impossible even if application code is wrong:
-- a reservation can never exceed what is on hand.
CREATE TABLE stock (
    sku        TEXT PRIMARY KEY,
    on_hand    BIGINT NOT NULL CHECK (on_hand >= 0),
    reserved   BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT reserved_within_on_hand CHECK (reserved <= on_hand)
);
