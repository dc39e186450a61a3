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
    custom      BYTEA,            -- AES-256-GCM sealed custom data
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE
);

-- Token handles: only the SHA-256 of a token string is ever stored.
CREATE TABLE tokens (
    hash        BYTEA PRIMARY KEY,
    grant_id    TEXT NOT NULL REFERENCES grants(id) ON DELETE CASCADE,
    kind        SMALLINT NOT NULL, -- 0 access, 1 refresh
    scopes      TEXT,              -- narrowed scope set, NULL = the grant's
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE,
    consumed_at BIGINT
);

CREATE INDEX tokens_by_grant ON tokens (grant_id);
CREATE INDEX tokens_by_expiry ON tokens (expires_at);

-- Short leases that make one gateway instance at a time refresh a given
-- downstream credential.
CREATE TABLE leases (
    key         TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    until       BIGINT NOT NULL
);
