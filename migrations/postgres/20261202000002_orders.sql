-- The order service's tables (SPEC §6.1–§6.3): shops, orders, their line items, product mappings,
-- the Shopify webhooks already seen, and the business event log. Money is a decimal string and
-- JSON documents are text, as on SQLite, so both databases share every query.

-- A Shopify shop and the tenant its orders belong to.
CREATE TABLE shops (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL REFERENCES tenants (id),
    domain          TEXT NOT NULL UNIQUE,
    uninstalled_at  TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE orders (
    id                  UUID PRIMARY KEY,
    tenant_id           UUID NOT NULL REFERENCES tenants (id),
    shopify_order_id    TEXT NOT NULL,
    order_number        TEXT NOT NULL,
    customer_name       TEXT NOT NULL DEFAULT '',
    customer_email      TEXT,
    shipping_address    TEXT,
    status              TEXT NOT NULL,
    total_price         TEXT NOT NULL,
    currency            TEXT NOT NULL,
    tracking_number     TEXT,
    tracking_url        TEXT,
    carrier             TEXT,
    cancel_reason       TEXT,
    -- The sum of the versions of the order's print jobs its status was last derived from: a
    -- derivation from an older snapshot never overwrites one from a newer.
    jobs_version        BIGINT NOT NULL DEFAULT 0,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, shopify_order_id)
);

CREATE INDEX orders_tenant_created ON orders (tenant_id, created_at);
CREATE INDEX orders_tenant_status ON orders (tenant_id, status, created_at);

CREATE TABLE line_items (
    id                      UUID PRIMARY KEY,
    tenant_id               UUID NOT NULL,
    order_id                UUID NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    position                BIGINT NOT NULL,
    shopify_line_item_id    TEXT NOT NULL,
    sku                     TEXT NOT NULL,
    product_name            TEXT NOT NULL,
    quantity                BIGINT NOT NULL,
    unit_price              TEXT NOT NULL,
    status                  TEXT NOT NULL,
    product_mapping_id      UUID,
    -- The print files of the mapping when the line was planned (JSON), and which plan it is on:
    -- re-planning a line (retry, a changed quantity) starts a new generation of print jobs.
    print_files             TEXT,
    plan_generation         BIGINT NOT NULL DEFAULT 1,
    created_at              TIMESTAMPTZ NOT NULL,
    updated_at              TIMESTAMPTZ NOT NULL,
    UNIQUE (order_id, shopify_line_item_id)
);

CREATE INDEX line_items_sku ON line_items (tenant_id, sku);

CREATE TABLE product_mappings (
    id                  UUID PRIMARY KEY,
    tenant_id           UUID NOT NULL REFERENCES tenants (id),
    sku                 TEXT NOT NULL,
    product_name        TEXT NOT NULL,
    shopify_product_id  TEXT,
    shopify_variant_id  TEXT,
    print_files         TEXT NOT NULL,
    is_active           BOOLEAN NOT NULL DEFAULT TRUE,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, sku)
);

-- Shopify retries a delivery for hours: one row per delivery (X-Shopify-Webhook-Id) and per
-- event and topic (X-Shopify-Event-Id), written in the transaction of what the delivery did.
CREATE TABLE shopify_webhooks (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL,
    webhook_id  TEXT NOT NULL,
    topic       TEXT NOT NULL,
    event_id    TEXT,
    received_at TIMESTAMPTZ NOT NULL
);

CREATE UNIQUE INDEX shopify_webhooks_delivery ON shopify_webhooks (tenant_id, webhook_id);
CREATE UNIQUE INDEX shopify_webhooks_event ON shopify_webhooks (tenant_id, topic, event_id)
    WHERE event_id IS NOT NULL;
CREATE INDEX shopify_webhooks_age ON shopify_webhooks (received_at);

-- The business event log (SPEC §6.5): one entry per state change of orders and print jobs.
CREATE TABLE event_log (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL,
    order_id        UUID,
    print_job_id    UUID,
    event_type      TEXT NOT NULL,
    severity        TEXT NOT NULL,
    message         TEXT NOT NULL,
    details         TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);

CREATE INDEX event_log_tenant_created ON event_log (tenant_id, created_at);
CREATE INDEX event_log_order ON event_log (order_id, created_at);
