-- Refresh tokens have an absolute lifetime: each token carries the deadline of its family (the
-- login that started it), and a refresh never issues a successor that outlives it. Sessions
-- from before this migration end when their current token would have.
ALTER TABLE refresh_tokens ADD COLUMN family_expires_at TIMESTAMPTZ;
UPDATE refresh_tokens SET family_expires_at = expires_at;
ALTER TABLE refresh_tokens ALTER COLUMN family_expires_at SET NOT NULL;
