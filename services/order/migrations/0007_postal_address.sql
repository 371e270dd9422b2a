-- The structured shipping address (OrderCreated v3): name, line1, line2, city, postal_code and
-- country (ISO 3166-1 alpha-2). NULL for orders placed with a free-text address, whose
-- `shipping_address` is all there is; for the others `shipping_address` holds it on one line.
ALTER TABLE orders ADD COLUMN address JSONB;
