-- Refresh tokens of non-browser clients (SPEC §5.1). Only a hash is stored. Every refresh rotates
-- the token within its family; presenting a used token again revokes the whole family.

CREATE TABLE refresh_tokens (
    id              BLOB PRIMARY KEY NOT NULL,
    family_id       BLOB NOT NULL,
    user_id         BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash      TEXT NOT NULL UNIQUE,
    session_epoch   BIGINT NOT NULL,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    used_at         TEXT,
    revoked_at      TEXT
);

CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
