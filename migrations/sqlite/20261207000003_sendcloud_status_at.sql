-- When Sendcloud sent the webhook whose parcel status the shipment shows (its `timestamp`): a
-- delivery sent before it (a retry that arrived late, a replay) is older news and changes nothing.
ALTER TABLE shipments ADD COLUMN sendcloud_status_at TEXT;
