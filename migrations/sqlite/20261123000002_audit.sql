-- The security audit log (SPEC §6.5): append-only. UUIDs are 16-byte BLOBs, timestamps RFC 3339
-- text as chrono writes it (UTC, `+00:00`), which sorts and compares correctly as text.
--
-- No foreign keys: an entry must outlive the user it names (`user.deleted`), and must never be
-- refused because the row it refers to is gone.

CREATE TABLE audit_logs (
    id           BLOB PRIMARY KEY NOT NULL,
    tenant_id    BLOB NOT NULL,
    actor_id     BLOB,
    actor_email  TEXT,
    action       TEXT NOT NULL,
    target_type  TEXT,
    target_id    TEXT,
    ip           TEXT,
    user_agent   TEXT,
    details      TEXT NOT NULL DEFAULT '{}',
    created_at   TEXT NOT NULL
);

CREATE INDEX audit_logs_tenant_created ON audit_logs (tenant_id, created_at);
CREATE INDEX audit_logs_tenant_action ON audit_logs (tenant_id, action);

-- The code has no UPDATE or DELETE for this table; the database refuses them too, so neither a bug
-- nor a stray script can rewrite history. Retention, when wanted, is an operator's deliberate act
-- (drop the trigger, prune, recreate it).
CREATE TRIGGER audit_logs_no_update BEFORE UPDATE ON audit_logs
BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only');
END;

CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs
BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only');
END;
