-- The id_token a grant was exchanged from, sealed with the data key, when
-- its trusted issuer keeps subject tokens (external exchanges on routes).
ALTER TABLE grants ADD COLUMN kept_subject_token BYTEA;
