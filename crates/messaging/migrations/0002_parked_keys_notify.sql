-- Every change to the parked keys (a key parked, a redrive requested, a key released) is
-- announced on `messaging_parked_keys`, so each consumer instance recounts its parked keys and
-- starts a requested redrive at once, instead of polling the table every second. Whoever makes
-- the change (the consumer, `bazaar dlq redrive`, psql) wakes them alike.
CREATE FUNCTION messaging_parked_keys_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('messaging_parked_keys', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER messaging_parked_keys_notify
    AFTER INSERT OR UPDATE OR DELETE ON messaging_parked_keys
    FOR EACH STATEMENT EXECUTE FUNCTION messaging_parked_keys_notify();
