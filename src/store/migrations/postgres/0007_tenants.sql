-- Tenants. Every grant, device authorization and signing key belongs to
-- one ('' is the top level); a token row belongs to its grant's tenant,
-- and a tenant's token hashes cover its name.
ALTER TABLE grants ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE device_codes ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
DROP INDEX grants_by_subject;
CREATE INDEX grants_by_subject ON grants (tenant, subject) WHERE NOT revoked;

-- Each tenant numbers its own key generations.
ALTER TABLE signing_keys ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE signing_keys DROP CONSTRAINT signing_keys_pkey;
ALTER TABLE signing_keys ADD PRIMARY KEY (tenant, generation);
