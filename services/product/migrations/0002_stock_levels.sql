-- The catalog's replica of inventory's compacted `stock-levels` topic: the latest level of each
-- SKU, for the availability shown while browsing. Written only by the stock-levels consumer.
-- No foreign key to variants: a level may arrive before the product that sells its SKU, and a
-- product's variants are replaced when it is saved.
CREATE TABLE stock_levels (
    sku        TEXT PRIMARY KEY,
    on_hand    BIGINT NOT NULL CHECK (on_hand >= 0),
    reserved   BIGINT NOT NULL CHECK (reserved >= 0),
    -- What a new order may still reserve, as inventory counts it.
    available  BIGINT GENERATED ALWAYS AS (on_hand - reserved) STORED,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
