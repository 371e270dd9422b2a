-- The catalog replica follows the latest ProductSnapshot of each product. The rule lives here
-- once: the order service's consumer calls it for every snapshot, and `bazaar rebuild order
-- catalog-replica` calls it to fill a fresh table (on a connection whose search_path finds that
-- table first; unqualified names are resolved by the caller's search_path). `snapshot` is the
-- event as its JSON serialisation (field names as in its Avro schema).
CREATE FUNCTION apply_product_snapshot(snapshot jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    variant jsonb;
BEGIN
    -- Variants gone from the product are no longer for sale.
    UPDATE catalog_replica SET available = false, updated_at = now()
     WHERE product_id = snapshot->>'product_id'
       AND NOT (sku = ANY (ARRAY(SELECT v->>'sku'
                                   FROM jsonb_array_elements(snapshot->'variants') AS v)));
    FOR variant IN SELECT * FROM jsonb_array_elements(snapshot->'variants') LOOP
        INSERT INTO catalog_replica (sku, product_id, product_name, variant_name, price_minor,
                                     currency, available)
        VALUES (variant->>'sku', snapshot->>'product_id', snapshot->>'name', variant->>'name',
                (variant->>'price_minor')::bigint, variant->>'currency',
                NOT (snapshot->>'archived')::boolean)
        ON CONFLICT (sku) DO UPDATE
           SET product_id = EXCLUDED.product_id, product_name = EXCLUDED.product_name,
               variant_name = EXCLUDED.variant_name, price_minor = EXCLUDED.price_minor,
               currency = EXCLUDED.currency, available = EXCLUDED.available, updated_at = now();
    END LOOP;
END
$$;
