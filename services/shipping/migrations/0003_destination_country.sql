-- The destination's ISO 3166-1 alpha-2 country, from OrderCreated v3's structured address.
-- NULL for orders placed with a free-text address (v1, v2): they ship as domestic.
ALTER TABLE orders ADD COLUMN country TEXT;
ALTER TABLE shipments ADD COLUMN country TEXT;
