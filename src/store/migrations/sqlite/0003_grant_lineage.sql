-- Where a grant comes from and how long it may live: a grant made by token
-- exchange names its source grant (revoking the source revokes it) and
-- never outlives it; an id_token subject keeps its issuer; a grant the
-- gateway minted for one route's upstream names that route.
ALTER TABLE grants ADD COLUMN parent_id TEXT;
ALTER TABLE grants ADD COLUMN not_after INTEGER;
ALTER TABLE grants ADD COLUMN idp TEXT;
ALTER TABLE grants ADD COLUMN route TEXT;
CREATE INDEX grants_by_parent ON grants (parent_id) WHERE parent_id IS NOT NULL;
