-- The security audit log (SPEC §6.5): append-only.
--
-- No foreign keys: an entry must outlive the user it names (`user.deleted`), and must never be
-- refused because the row it refers to is gone.

CREATE TABLE audit_logs (
    id           UUID PRIMARY KEY,
    tenant_id    UUID NOT NULL,
    actor_id     UUID,
    actor_email  TEXT,
    action       TEXT NOT NULL,
    target_type  TEXT,
    target_id    TEXT,
    ip           TEXT,
    user_agent   TEXT,
    details      JSONB NOT NULL DEFAULT '{}',
    created_at   TIMESTAMPTZ NOT NULL
);

CREATE INDEX audit_logs_tenant_created ON audit_logs (tenant_id, created_at);
CREATE INDEX audit_logs_tenant_action ON audit_logs (tenant_id, action);

-- The code has no UPDATE or DELETE for this table; the database refuses them too, so neither a bug
-- nor a stray script can rewrite history. Retention, when wanted, is an operator's deliberate act
-- (drop the trigger, prune, recreate it).
CREATE FUNCTION audit_logs_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_logs_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only();

-- TRUNCATE skips row triggers.
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_append_only();
