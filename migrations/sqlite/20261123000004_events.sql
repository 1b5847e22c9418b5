-- Events (SPEC §8.1): the transactional outbox and the consumers' dedupe records. UUIDs are
-- 16-byte BLOBs, timestamps RFC 3339 text (UTC), which compares correctly as text.
--
-- outbox: a row is written in the same transaction as the change that causes the event, so a
-- rolled-back change never publishes and a committed one always does (the relay publishes it and
-- sets sent_at). `id` gives the publishing order; AUTOINCREMENT keeps ids growing even after the
-- newest rows were deleted by cleanup. `payload` is the event's catalog JSON, exactly as it goes
-- on the bus. claimed_by / claimed_until: a relay's lease on a batch while it publishes it
-- (SQLite has no SKIP LOCKED); attempts counts publish attempts.

CREATE TABLE outbox (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       BLOB NOT NULL UNIQUE,
    event_type     TEXT NOT NULL,
    payload        TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    claimed_until  TEXT,
    claimed_by     TEXT,
    sent_at        TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0
);

-- The relay only ever looks for unsent rows in id order, and cleanup for old sent ones.
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- processed_events: one row per event a consumer has handled, committed together with the
-- handler's writes, so a redelivered event is recognised and skipped.
CREATE TABLE processed_events (
    event_id      BLOB NOT NULL,
    consumer      TEXT NOT NULL,
    processed_at  TEXT NOT NULL,
    PRIMARY KEY (event_id, consumer)
);

CREATE INDEX processed_events_processed_at ON processed_events (processed_at);
