-- E-mail notifications (SPEC §6.5): what each tenant wants mailed, and the e-mails waiting to be
-- sent. An e-mail is a row before it is a connection to the SMTP server, so an SMTP outage or a
-- restart loses none: the sender tries a row again until the server takes it.

-- One row per tenant once its settings were saved; none means the defaults (every kind on, no
-- recipients). `recipients` is a JSON array of addresses.
CREATE TABLE notification_settings (
    tenant_id           UUID PRIMARY KEY REFERENCES tenants (id),
    recipients          TEXT NOT NULL DEFAULT '[]',
    print_job_failed    BOOLEAN NOT NULL DEFAULT TRUE,
    order_failed        BOOLEAN NOT NULL DEFAULT TRUE,
    fulfillment_failed  BOOLEAN NOT NULL DEFAULT TRUE,
    unmapped_sku        BOOLEAN NOT NULL DEFAULT TRUE,
    updated_at          TIMESTAMPTZ NOT NULL
);

-- One e-mail to one recipient. `dedupe_key` names the occurrence it tells of (a print job's failed
-- attempt, an order's first failed fulfillment): the same occurrence reported twice (by the print
-- side and again by the bus) records it once. NULL means no two reports of it can come.
CREATE TABLE notification_emails (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL REFERENCES tenants (id),
    kind            TEXT NOT NULL,
    dedupe_key      TEXT,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    -- PENDING until sent (SENT), only logged for want of an SMTP server (LOGGED), or given up (FAILED).
    status          TEXT NOT NULL DEFAULT 'PENDING',
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    lease_until     TIMESTAMPTZ,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    sent_at         TIMESTAMPTZ
);

CREATE UNIQUE INDEX notification_emails_once ON notification_emails (tenant_id, dedupe_key, recipient);
CREATE INDEX notification_emails_due ON notification_emails (next_attempt_at) WHERE status = 'PENDING';
CREATE INDEX notification_emails_tenant ON notification_emails (tenant_id, created_at);
