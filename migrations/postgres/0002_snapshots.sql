-- Snapshots of aggregates: every one is kept. `seq` orders snapshots of the
-- same version by when they were posted; `time` is microseconds since the epoch.
CREATE TABLE snapshots (
    seq bigserial PRIMARY KEY,
    stream text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    type text,
    state text NOT NULL,
    time bigint NOT NULL
);

CREATE INDEX snapshots_stream_version ON snapshots (stream, version, seq);
