-- Sign-in attempts are counted before the password is checked (a reservation), so a row needs its
-- own id: the attempt that turns out to be locked out removes exactly its own row. `client` is the
-- rate limiter's bucket: an IPv4 address or an IPv6 /64. Pending lockouts are not carried over.
DROP TABLE login_failures;

CREATE TABLE login_attempts (
    id              BLOB PRIMARY KEY NOT NULL,
    email           TEXT NOT NULL,
    client          TEXT NOT NULL,
    attempted_at    TEXT NOT NULL
);

CREATE INDEX login_attempts_lookup ON login_attempts (email, client, attempted_at);
CREATE INDEX login_attempts_age ON login_attempts (attempted_at);

-- A refresh token family (one sign-in of a non-browser client). Issuing and revoking serialise on
-- this row, so a family that was revoked never issues again, however the requests interleave.
CREATE TABLE refresh_token_families (
    id          BLOB PRIMARY KEY NOT NULL,
    user_id     BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    touched_at  TEXT NOT NULL,
    revoked_at  TEXT
);

INSERT INTO refresh_token_families (id, user_id, created_at, touched_at, revoked_at)
SELECT family_id, MIN(user_id), MIN(created_at), MAX(created_at),
       MAX(revoked_at)
FROM refresh_tokens GROUP BY family_id;
