-- The shipping side's tables (SPEC §6.4), owned by the shipping module: the order side never reads
-- them, it asks the shipping service (that is what makes extracting it a configuration change).

CREATE TABLE shipments (
    id                      BLOB PRIMARY KEY NOT NULL,
    tenant_id               BLOB NOT NULL,
    order_id                BLOB NOT NULL,
    -- What the parcel is made of (the order's number, address and items as JSON), kept so the
    -- parcel can be created later, after an outage, without asking the order service again.
    request                 TEXT NOT NULL,
    status                  TEXT NOT NULL,
    sendcloud_parcel_id     INTEGER,
    sendcloud_status_id     INTEGER,
    carrier                 TEXT,
    tracking_number         TEXT,
    tracking_url            TEXT,
    label_url               TEXT,
    -- Creating the parcel at Sendcloud: when to try next, who holds it now, how often it failed.
    parcel_after            TEXT,
    parcel_lease_until      TEXT,
    parcel_attempts         INTEGER NOT NULL DEFAULT 0,
    parcel_error            TEXT,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL
);

-- One shipment per order: the event that asks for it may come twice.
CREATE UNIQUE INDEX shipments_order ON shipments (tenant_id, order_id);
CREATE INDEX shipments_tenant_created ON shipments (tenant_id, created_at);
CREATE UNIQUE INDEX shipments_parcel ON shipments (sendcloud_parcel_id);
CREATE INDEX shipments_waiting ON shipments (parcel_after) WHERE status = 'PENDING';
