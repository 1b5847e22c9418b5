-- The Shopify shop an order came from (its domain, as Shopify writes it): a tenant may connect
-- several shops, and an order is fulfilled through its own. NULL for orders stored before.
ALTER TABLE orders ADD COLUMN shop_domain TEXT;
