-- Paid orders by deadline, for the orders_past_deadline gauge (orders shipping never scheduled):
-- with orders_pending_by_deadline, counting orders not final past their deadline reads two
-- small partial indexes, never the whole table. An order is in it only while paid.
CREATE INDEX orders_paid_by_deadline ON orders (deadline_at) WHERE status = 'paid';
