-- Inventory (SPEC §6.5b), owned by the order service's inventory module: stock per product
-- mapping, the stock batches it has printed, and which order lines took units from stock.

-- One row per mapping whose stock anyone set; a mapping without one has target 0 and no stock.
-- The CHECK is the last line of defence: every take is a conditional UPDATE already.
CREATE TABLE inventory_levels (
    mapping_id      BLOB PRIMARY KEY NOT NULL REFERENCES product_mappings (id) ON DELETE CASCADE,
    tenant_id       BLOB NOT NULL,
    stock_target    INTEGER NOT NULL DEFAULT 0 CHECK (stock_target >= 0),
    stock_on_hand   INTEGER NOT NULL DEFAULT 0 CHECK (stock_on_hand >= 0),
    batch_size      INTEGER NOT NULL DEFAULT 1 CHECK (batch_size >= 1),
    replenish       INTEGER NOT NULL DEFAULT 1,
    updated_at      TEXT NOT NULL
);

-- A batch is `units` units of one product, printed as `total_jobs` print jobs; it adds its units
-- to stock once, when its last job completes.
CREATE TABLE stock_batches (
    id              BLOB PRIMARY KEY NOT NULL,
    tenant_id       BLOB NOT NULL,
    mapping_id      BLOB NOT NULL,
    sku             TEXT NOT NULL,
    units           INTEGER NOT NULL,
    total_jobs      INTEGER NOT NULL,
    completed_jobs  INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    completed_at    TEXT
);

CREATE INDEX stock_batches_open ON stock_batches (mapping_id) WHERE status = 'OPEN';
CREATE INDEX stock_batches_tenant ON stock_batches (tenant_id, created_at);

-- The print jobs the scheduler asked for (their ids are chosen here, so the print service creates
-- each exactly once); `completed_at` set once makes a repeated completion count nothing.
CREATE TABLE stock_jobs (
    print_job_id    BLOB PRIMARY KEY NOT NULL,
    tenant_id       BLOB NOT NULL,
    batch_id        BLOB NOT NULL REFERENCES stock_batches (id) ON DELETE CASCADE,
    file_id         TEXT NOT NULL,
    file_name       TEXT NOT NULL,
    print_profile   TEXT,
    completed_at    TEXT
);

CREATE INDEX stock_jobs_batch ON stock_jobs (batch_id);

-- Units an order line took from stock; `returned_at` once they went back (order cancelled).
CREATE TABLE stock_allocations (
    line_item_id    BLOB PRIMARY KEY NOT NULL,
    tenant_id       BLOB NOT NULL,
    order_id        BLOB NOT NULL,
    mapping_id      BLOB NOT NULL,
    sku             TEXT NOT NULL,
    units           INTEGER NOT NULL,
    allocated_at    TEXT NOT NULL,
    returned_at     TEXT
);

CREATE INDEX stock_allocations_order ON stock_allocations (order_id);
CREATE INDEX stock_allocations_tenant ON stock_allocations (tenant_id, allocated_at);

-- The replenishment scheduler's lease: one row, taken by the replica whose pass is due, locked
-- for the length of that pass.
CREATE TABLE inventory_scheduler (
    name            TEXT PRIMARY KEY NOT NULL,
    last_run_at     TEXT,
    runs            INTEGER NOT NULL DEFAULT 0
);

INSERT INTO inventory_scheduler (name, runs) VALUES ('replenishment', 0);

-- How many units of a line were served from stock: only the rest is printed.
ALTER TABLE line_items ADD COLUMN stock_units INTEGER NOT NULL DEFAULT 0;
