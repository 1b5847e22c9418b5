-- When Shopify last changed the order, as the newest document forma applied says (its
-- `updated_at`). Shopify does not deliver webhooks in order, and retries a failed one for hours:
-- a document older than this one is not applied over it. NULL when none said.
ALTER TABLE orders ADD COLUMN shopify_updated_at TIMESTAMPTZ;
