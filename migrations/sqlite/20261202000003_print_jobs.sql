-- The print side's tables (SPEC §6.4), owned by the print module: the order side never reads them
-- (that is what makes extracting the print service a configuration change).

CREATE TABLE print_jobs (
    id                      BLOB PRIMARY KEY NOT NULL,
    tenant_id               BLOB NOT NULL,
    -- Both null for a stock job (SPEC §6.5b).
    order_id                BLOB,
    line_item_id            BLOB,
    -- Which plan of the line item, which of its print files, and which of that file's prints this
    -- job is: planning the same line twice creates nothing twice.
    generation              INTEGER NOT NULL DEFAULT 1,
    file_index              INTEGER NOT NULL DEFAULT 0,
    sequence                INTEGER NOT NULL DEFAULT 1,
    file_id                 TEXT NOT NULL,
    file_name               TEXT NOT NULL,
    print_profile           TEXT,
    purpose                 TEXT NOT NULL DEFAULT 'ORDER',
    status                  TEXT NOT NULL,
    simplyprint_job_id      TEXT,
    attempts                INTEGER NOT NULL DEFAULT 1,
    error_message           TEXT,
    -- Bumped by every change: the order side orders its snapshots of an order's jobs by it.
    version                 BIGINT NOT NULL DEFAULT 1,
    -- Handing the job to SimplyPrint: when to try next, who holds it now, how often it failed.
    dispatch_after          TEXT,
    dispatch_lease_until    TEXT,
    dispatch_attempts       INTEGER NOT NULL DEFAULT 0,
    dispatch_error          TEXT,
    started_at              TEXT,
    completed_at            TEXT,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL
);

CREATE UNIQUE INDEX print_jobs_plan ON print_jobs (line_item_id, generation, file_index, sequence)
    WHERE line_item_id IS NOT NULL;
CREATE INDEX print_jobs_tenant_created ON print_jobs (tenant_id, created_at);
CREATE INDEX print_jobs_order ON print_jobs (order_id);
CREATE INDEX print_jobs_simplyprint ON print_jobs (simplyprint_job_id);
CREATE INDEX print_jobs_dispatch ON print_jobs (dispatch_after)
    WHERE status = 'QUEUED' AND simplyprint_job_id IS NULL;

-- SimplyPrint webhook deliveries already handled (`webhook_id`): a redelivered `job.failed` must
-- not fail a job that was retried since.
CREATE TABLE simplyprint_webhooks (
    webhook_id  TEXT PRIMARY KEY NOT NULL,
    received_at TEXT NOT NULL
);

CREATE INDEX simplyprint_webhooks_age ON simplyprint_webhooks (received_at);
