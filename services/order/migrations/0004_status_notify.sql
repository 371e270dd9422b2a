-- Every status change is announced on the `order_status` channel as
-- `<order id> <the change as JSON>`, so open order event streams hear it the moment it commits
-- (NOTIFY is delivered at commit, in commit order) instead of polling. Every instance of the
-- order service listens, so a stream works whichever instance serves it.
CREATE FUNCTION order_status_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'order_status',
        NEW.order_id::text || ' ' || json_build_object(
            'id', NEW.id, 'status', NEW.status, 'reason', NEW.reason, 'at', NEW.at
        )::text
    );
    RETURN NULL;
END
$$;

CREATE TRIGGER order_status_notify
    AFTER INSERT ON order_status_history
    FOR EACH ROW EXECUTE FUNCTION order_status_notify();
