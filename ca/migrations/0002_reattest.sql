-- meshedge CA schema, version 2: node attestation keys and re-attestation nonces.
CREATE TABLE IF NOT EXISTS attestation_keys (
    node TEXT PRIMARY KEY,
    key BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS reattest_nonces (
    nonce TEXT PRIMARY KEY,
    seen_at BIGINT NOT NULL
);
