-- Creating an order's Shopify fulfillment, tried again from the order's own row until Shopify
-- takes it (as print jobs' dispatch and shipments' parcels are): when to try next, who holds it,
-- how often it failed and why. Due while the order is SHIPPED and fulfillment_after is set.
ALTER TABLE orders ADD COLUMN fulfillment_after TIMESTAMPTZ;
ALTER TABLE orders ADD COLUMN fulfillment_lease_until TIMESTAMPTZ;
ALTER TABLE orders ADD COLUMN fulfillment_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN fulfillment_error TEXT;

CREATE INDEX orders_fulfillment_due ON orders (fulfillment_after) WHERE status = 'SHIPPED';
