-- Tenants. Every grant, device authorization and signing key belongs to
-- one ('' is the top level); a token row belongs to its grant's tenant,
-- and a tenant's token hashes cover its name.
ALTER TABLE grants ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE device_codes ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
DROP INDEX grants_by_subject;
CREATE INDEX grants_by_subject ON grants (tenant, subject) WHERE revoked = 0;

-- Each tenant numbers its own key generations.
CREATE TABLE signing_keys_by_tenant (
    tenant          TEXT NOT NULL DEFAULT '',
    generation      INTEGER NOT NULL,
    kid             TEXT NOT NULL UNIQUE,
    algorithm       TEXT NOT NULL,
    public_jwk      TEXT NOT NULL,
    private_sealed  BLOB NOT NULL,
    created_at      INTEGER NOT NULL,
    signs_from      INTEGER NOT NULL,
    signs_until     INTEGER NOT NULL,
    PRIMARY KEY (tenant, generation)
) STRICT;
INSERT INTO signing_keys_by_tenant (tenant, generation, kid, algorithm, public_jwk,
    private_sealed, created_at, signs_from, signs_until)
    SELECT '', generation, kid, algorithm, public_jwk, private_sealed, created_at,
        signs_from, signs_until FROM signing_keys;
DROP TABLE signing_keys;
ALTER TABLE signing_keys_by_tenant RENAME TO signing_keys;
