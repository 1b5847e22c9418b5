-- Sessions of the embedded session store, the per-user session epoch that revokes every session
-- of a user at once (password change), and failed sign-ins for the brute-force lockout.

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    record      TEXT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX sessions_expires_at ON sessions (expires_at);

ALTER TABLE users ADD COLUMN session_epoch BIGINT NOT NULL DEFAULT 0;

CREATE TABLE login_failures (
    email       TEXT NOT NULL,
    ip          TEXT NOT NULL,
    failed_at   TIMESTAMPTZ NOT NULL
);

CREATE INDEX login_failures_lookup ON login_failures (email, ip, failed_at);
