-- Users whose sessions ended (a new password, deactivated, deleted) and whose browsers' push
-- subscriptions the order service must still forget: a row until it has, after the moment a
-- subscription made under those sessions can no longer land (`settle_at`).
CREATE TABLE push_revocations (
    user_id         UUID PRIMARY KEY NOT NULL,
    tenant_id       UUID NOT NULL,
    settle_at       TIMESTAMPTZ NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT
);

CREATE INDEX push_revocations_due ON push_revocations (next_attempt_at);
