-- The trace of the checkout a payment belongs to (W3C traceparent of the event that last
-- changed it), so the worker's card processor call and the events it publishes continue that
-- trace instead of starting their own.
ALTER TABLE payments ADD COLUMN traceparent TEXT;
