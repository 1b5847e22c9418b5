-- When reconciliation last asked SimplyPrint about a job, or Sendcloud about a parcel. Each pass
-- asks about those it asked about longest ago (never asked first), so every job and parcel still
-- moving is asked about in turn, however many there are and whatever their answers.
ALTER TABLE print_jobs ADD COLUMN reconciled_at TEXT;
ALTER TABLE shipments ADD COLUMN reconciled_at TEXT;
