-- API keys (API.md, Authentication and authorization). Only a digest of each
-- secret is kept. `scopes` is space-separated; `streams` a JSON array of
-- prefixes, or NULL for every stream. Revoked keys stay (with `revoked` set):
-- a store that ever held a key keeps authentication on. Times are
-- microseconds since the epoch.
CREATE TABLE api_keys (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    digest TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    streams TEXT,
    expires_at BIGINT,
    created BIGINT NOT NULL,
    revoked BIGINT
);
