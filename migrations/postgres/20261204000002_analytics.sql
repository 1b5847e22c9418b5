-- Analytics (SPEC §6.5), read by src/order/analytics on 100 000 orders (benches/analytics.rs).

-- The moment each order became FULFILLED: its event-log entry (details are always JSON written by
-- forma). One small entry per fulfilled order instead of probing the whole log order by order.
CREATE INDEX event_log_fulfilled ON event_log (order_id, created_at)
    WHERE event_type = 'order.status_changed' AND CAST(details AS JSONB) ->> 'newStatus' = 'FULFILLED';

-- Everything the overview and the time series read of an order of the period (its id for the
-- lookups in the log and the lines), so that they never visit the table (an index-only scan
-- once vacuumed).
CREATE INDEX orders_analytics ON orders (tenant_id, created_at, status, currency, total_price, id);

-- What the top SKUs read of a line, for the same reason.
CREATE INDEX line_items_analytics ON line_items (order_id, status, sku, quantity);
