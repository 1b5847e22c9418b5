-- A queue item to take out of SimplyPrint's queue: the item of a job cancelled while it waited
-- there, kept until SimplyPrint has taken it out, so a failed call is tried again rather than
-- leaving the farm to print a cancelled order. '' when the job's item was never recorded (it is
-- found by the job's tag). `farm_removal_after`: when to try next, or until when a replica's
-- claim on it holds.
ALTER TABLE print_jobs ADD COLUMN farm_removal TEXT;
ALTER TABLE print_jobs ADD COLUMN farm_removal_after TEXT;
ALTER TABLE print_jobs ADD COLUMN farm_removal_attempts INTEGER NOT NULL DEFAULT 0;
