-- RFC 8628 device authorizations: the SHA-256 hashes of the device code
-- and of the normalised user code, never the codes themselves.
CREATE TABLE device_codes (
    device_hash   BYTEA PRIMARY KEY,
    user_hash     BYTEA NOT NULL UNIQUE,
    client_id     TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    -- 0 pending, 1 approved, 2 denied
    status        SMALLINT NOT NULL DEFAULT 0,
    subject       TEXT,
    idp           TEXT,
    expires_at    BIGINT NOT NULL,
    interval_secs BIGINT NOT NULL,
    -- milliseconds since the Unix epoch
    last_poll_ms  BIGINT,
    consumed      BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX device_codes_expiry ON device_codes (expires_at);
