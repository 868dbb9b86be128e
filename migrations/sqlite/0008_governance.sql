-- Data governance (API.md: Event schemas, Retention and deletion, Export and
-- import). Times are microseconds since the epoch.

-- One JSON Schema per event type, kept as the text the client sent (NULL:
-- deleted). `version` counts every change and is never reused, not even
-- after a deletion: writers cache compiled validators by type and version,
-- so a change made by any process is seen by all.
CREATE TABLE event_schemas (
    type TEXT PRIMARY KEY,
    schema TEXT,
    version INTEGER NOT NULL,
    time INTEGER NOT NULL
) WITHOUT ROWID;

-- Retention policies of streams and of categories (a stream's own wins).
CREATE TABLE retention_policies (
    scope TEXT NOT NULL CHECK (scope IN ('stream', 'category')),
    name TEXT NOT NULL,
    max_age_s INTEGER CHECK (max_age_s > 0),
    max_count INTEGER CHECK (max_count > 0),
    PRIMARY KEY (scope, name)
) WITHOUT ROWID;

-- Deleted streams: their name stays taken (410) at the version they had.
CREATE TABLE tombstones (
    stream TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    time INTEGER NOT NULL
) WITHOUT ROWID;

-- The head of the log when its last events were erased (or imported from
-- an export whose last events were): the head never decreases, so it is the
-- greater of this and the last event's global position.
CREATE TABLE log_head (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    global_position INTEGER NOT NULL
);
