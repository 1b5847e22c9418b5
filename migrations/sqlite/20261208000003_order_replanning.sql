-- An order Shopify changed whose lines are to be planned anew: due since `replan_after`, until a
-- re-planning begun after it has succeeded. NULL when nothing waits.
ALTER TABLE orders ADD COLUMN replan_after TEXT;
ALTER TABLE orders ADD COLUMN replan_attempts BIGINT NOT NULL DEFAULT 0;

CREATE INDEX orders_replan_due ON orders (replan_after) WHERE replan_after IS NOT NULL;
