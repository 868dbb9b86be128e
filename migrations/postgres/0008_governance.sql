-- Data governance (API.md: Event schemas, Retention and deletion, Export and
-- import). Times are microseconds since the epoch, as in snapshots.

-- One JSON Schema per event type, kept as the text the client sent (NULL:
-- deleted). `version` counts every change and is never reused, not even
-- after a deletion: writers cache compiled validators by type and version,
-- so a change made through any instance is seen by all.
CREATE TABLE event_schemas (
    type text COLLATE "C" PRIMARY KEY,
    schema text,
    version bigint NOT NULL,
    time bigint NOT NULL
);

-- Retention policies of streams and of categories (a stream's own wins).
CREATE TABLE retention_policies (
    scope text NOT NULL CHECK (scope IN ('stream', 'category')),
    name text COLLATE "C" NOT NULL,
    max_age_s bigint CHECK (max_age_s > 0),
    max_count bigint CHECK (max_count > 0),
    PRIMARY KEY (scope, name)
);

-- Deleted streams: their name stays taken (410) at the version they had.
CREATE TABLE tombstones (
    stream text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL,
    time bigint NOT NULL
);

-- The head of the log when its last events were erased (or imported from
-- an export whose last events were): the head never decreases, so it is the
-- greater of this and the last event's global position.
CREATE TABLE log_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    global_position bigint NOT NULL
);
