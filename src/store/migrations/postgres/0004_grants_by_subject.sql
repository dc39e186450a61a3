-- Revoking every grant of a subject finds them without a full scan.
CREATE INDEX grants_by_subject ON grants (subject) WHERE NOT revoked;
