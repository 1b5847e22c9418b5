-- A cancelled stock job never brings its batch's units: the batch stops counting as printing for
-- stock, so the scheduler plans the units again (SPEC §6.5b).
ALTER TABLE stock_jobs ADD COLUMN cancelled_at TEXT;
