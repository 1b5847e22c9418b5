-- A revocation is recorded in the transaction that ends the user's sessions, and is done once a
-- call made after that end was answered: it keeps when the sessions ended, not a settling time.
ALTER TABLE push_revocations RENAME COLUMN settle_at TO ended_at;
