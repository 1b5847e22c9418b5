-- The Shopify app's lifecycle (SPEC §6.3): shops installed through OAuth carry their Admin API
-- access token, encrypted (a random nonce, then the ciphertext and its tag; never the token);
-- the OAuth states an install waits on; and the backfills that import a shop's past orders.

ALTER TABLE shops ADD COLUMN access_token_ciphertext BLOB;
-- The scopes Shopify granted, comma-separated, as it wrote them.
ALTER TABLE shops ADD COLUMN scopes TEXT;
ALTER TABLE shops ADD COLUMN installed_at TEXT;

CREATE INDEX shops_tenant ON shops (tenant_id, installed_at);

-- One row per install begun: the callback consumes it once (used_at), within ten minutes, for the
-- shop it was made for. Who began it is kept for the audit log of the callback, which carries no
-- session.
CREATE TABLE shopify_oauth_states (
    nonce       TEXT PRIMARY KEY NOT NULL,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id),
    shop        TEXT NOT NULL,
    user_id     BLOB,
    user_email  TEXT,
    created_at  TEXT NOT NULL,
    used_at     TEXT
);

CREATE INDEX shopify_oauth_states_age ON shopify_oauth_states (created_at);

-- One import of a shop's orders created since a moment, page by page, with its progress.
CREATE TABLE shopify_backfills (
    id          BLOB PRIMARY KEY NOT NULL,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id),
    shop        TEXT NOT NULL,
    since       TEXT NOT NULL,
    -- RUNNING, DONE or FAILED.
    status      TEXT NOT NULL,
    pages       BIGINT NOT NULL DEFAULT 0,
    imported    BIGINT NOT NULL DEFAULT 0,
    skipped     BIGINT NOT NULL DEFAULT 0,
    error       TEXT,
    started_at  TEXT NOT NULL,
    finished_at TEXT
);

CREATE INDEX shopify_backfills_tenant ON shopify_backfills (tenant_id, started_at);
