-- The event log. One row per event; `data` and `metadata` keep the exact JSON
-- text the client sent. Times are microseconds since the Unix epoch (UTC).
-- Text compares byte-wise (BINARY), which is the byte order API.md asks for.
CREATE TABLE events (
    global_position INTEGER PRIMARY KEY,
    id BLOB NOT NULL UNIQUE,
    stream TEXT NOT NULL,
    position INTEGER NOT NULL,
    category TEXT NOT NULL,
    cardinal_hash INTEGER NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    metadata TEXT,
    causation_id BLOB,
    correlation_id TEXT,
    time INTEGER NOT NULL,
    -- Belt and braces under the write lock: a stream position is taken once.
    UNIQUE (stream, position)
);

CREATE INDEX events_category ON events (category, global_position);
CREATE INDEX events_correlation ON events (correlation_id, global_position)
    WHERE correlation_id IS NOT NULL;
CREATE INDEX events_causation ON events (causation_id) WHERE causation_id IS NOT NULL;

-- One row per stream: its version and last commit.
CREATE TABLE streams (
    stream TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    last_time INTEGER NOT NULL
) WITHOUT ROWID;
