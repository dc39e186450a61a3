-- Keys that sign the JWTs refgate issues. One row per generation: the
-- primary key on `generation` is what keeps two instances from adding two
-- keys for one turn of the schedule. The private key is sealed with the
-- data key; the public key is kept as its JWK.
CREATE TABLE signing_keys (
    generation      BIGINT PRIMARY KEY,
    kid             TEXT NOT NULL UNIQUE,
    algorithm       TEXT NOT NULL,
    public_jwk      TEXT NOT NULL,
    private_sealed  BYTEA NOT NULL,
    created_at      BIGINT NOT NULL,
    signs_from      BIGINT NOT NULL,
    signs_until     BIGINT NOT NULL
);
