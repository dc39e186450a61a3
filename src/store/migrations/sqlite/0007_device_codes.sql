-- RFC 8628 device authorizations: the SHA-256 hashes of the device code
-- and of the normalised user code, never the codes themselves.
CREATE TABLE device_codes (
    device_hash   BLOB PRIMARY KEY,
    user_hash     BLOB NOT NULL UNIQUE,
    client_id     TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    -- 0 pending, 1 approved, 2 denied
    status        INTEGER NOT NULL DEFAULT 0,
    subject       TEXT,
    idp           TEXT,
    expires_at    INTEGER NOT NULL,
    interval_secs INTEGER NOT NULL,
    -- milliseconds since the Unix epoch
    last_poll_ms  INTEGER,
    consumed      INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX device_codes_expiry ON device_codes (expires_at);
