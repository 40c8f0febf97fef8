-- meshedge CA schema, version 1: key material (sealed), join tokens, entries, bans.
CREATE TABLE IF NOT EXISTS ca_manifest (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    body TEXT NOT NULL,
    version BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS ca_keys (
    kind TEXT NOT NULL,
    generation BIGINT NOT NULL,
    cert_pem TEXT NOT NULL,
    key_sealed BYTEA NOT NULL,
    PRIMARY KEY (kind, generation)
);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY,
    spiffe_id TEXT NOT NULL,
    parent TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_parent ON entries (parent);
CREATE TABLE IF NOT EXISTS bans (
    node TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
