CREATE TABLE users (
    id            UUID PRIMARY KEY,
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    roles         TEXT[] NOT NULL DEFAULT '{customer}',
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- E-mail addresses are unique regardless of case.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
