-- Grants: one authorization each. Custom data is sealed before it gets here.
CREATE TABLE grants (
    id          TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL,
    subject     TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    audience    TEXT,             -- JSON array, NULL when unset
    actor       TEXT,             -- JSON object (RFC 8693 act)
    issuer      TEXT,             -- asserted iss of an arbitrary token
    claims      TEXT,             -- JSON object of extra claims
    custom      BLOB,             -- AES-256-GCM sealed custom data
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Token handles: only the SHA-256 of a token string is ever stored.
CREATE TABLE tokens (
    hash        BLOB PRIMARY KEY,
    grant_id    TEXT NOT NULL REFERENCES grants(id) ON DELETE CASCADE,
    kind        INTEGER NOT NULL, -- 0 access, 1 refresh
    scopes      TEXT,             -- narrowed scope set, NULL = the grant's
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0,
    consumed_at INTEGER
) STRICT, WITHOUT ROWID;

CREATE INDEX tokens_by_grant ON tokens (grant_id);
CREATE INDEX tokens_by_expiry ON tokens (expires_at);
