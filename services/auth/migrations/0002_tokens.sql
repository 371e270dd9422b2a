-- Ed25519 signing keys. Exactly one is active (signs new tokens); retired ones stay published in
-- the JWKS until `publish_until`, when every token they signed has expired.
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    private_key   BYTEA NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    retired_at    TIMESTAMPTZ,
    publish_until TIMESTAMPTZ,
    CHECK ((retired_at IS NULL) = (publish_until IS NULL))
);

-- At most one active key, so instances starting together cannot both create one.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((true)) WHERE retired_at IS NULL;

-- Refresh tokens, stored as SHA-256 of the token (they are random 256-bit strings, so a fast
-- hash is enough). Each login starts a family; each refresh marks the presented token used and
-- adds its successor to the family. Presenting a used token revokes the whole family.
CREATE TABLE refresh_tokens (
    id         UUID PRIMARY KEY,
    family_id  UUID NOT NULL,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash BYTEA NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);

CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_by_user ON refresh_tokens (user_id) WHERE revoked_at IS NULL;
CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_at);

-- Fixed-window login counters: 'account:<lower email>' counts failures, 'address:<ip>' counts
-- attempts. Shared by every instance of the service.
CREATE TABLE login_throttle (
    bucket       TEXT PRIMARY KEY,
    window_start TIMESTAMPTZ NOT NULL,
    count        INT NOT NULL
);
