-- The cancellation of a shipment's parcel at Sendcloud, recorded before Sendcloud is asked and
-- kept until it answers, so an outage or a crash in between does not leave a cancelled order's
-- parcel announced (and shipped). `cancel_requested_at`: when the order's cancellation asked for
-- it, NULL when nothing is asked; `cancel_after`: when to try next, or until when a replica's
-- claim on it holds, NULL once Sendcloud refused (the parcel ships; `cancel_error` says why).
ALTER TABLE shipments ADD COLUMN cancel_requested_at TIMESTAMPTZ;
ALTER TABLE shipments ADD COLUMN cancel_after TIMESTAMPTZ;
ALTER TABLE shipments ADD COLUMN cancel_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE shipments ADD COLUMN cancel_error TEXT;
CREATE INDEX shipments_cancelling ON shipments (cancel_after) WHERE cancel_after IS NOT NULL;
