-- Short leases that make one gateway instance at a time refresh a given
-- downstream credential.
CREATE TABLE leases (
    key         TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    until       INTEGER NOT NULL
) STRICT;
