-- The event log. One row per event; the JSON of `data` and `metadata` is kept
-- as the exact text the client sent (jsonb would reorder keys and reject \u0000).
CREATE TABLE events (
    global_position bigint PRIMARY KEY,
    id uuid NOT NULL UNIQUE,
    stream text COLLATE "C" NOT NULL,
    position bigint NOT NULL,
    category text COLLATE "C" NOT NULL,
    cardinal_hash bigint NOT NULL,
    type text NOT NULL,
    data text NOT NULL,
    metadata text,
    causation_id uuid,
    correlation_id text,
    time timestamptz NOT NULL,
    -- Belt and braces under the write lock: a stream position is taken once.
    CONSTRAINT events_stream_position UNIQUE (stream, position)
);

CREATE INDEX events_category ON events (category, global_position);
CREATE INDEX events_correlation ON events (correlation_id, global_position)
    WHERE correlation_id IS NOT NULL;
CREATE INDEX events_causation ON events (causation_id) WHERE causation_id IS NOT NULL;

-- One row per stream: its version and last commit, for version checks, ETags
-- and the stream listing (in byte order, hence COLLATE "C").
CREATE TABLE streams (
    stream text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL,
    last_time timestamptz NOT NULL
);
