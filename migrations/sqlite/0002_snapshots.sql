-- Snapshots of aggregates: every one is kept. `seq` orders snapshots of the
-- same version by when they were posted; `time` is microseconds since the epoch.
CREATE TABLE snapshots (
    seq INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    version INTEGER NOT NULL,
    type TEXT,
    state TEXT NOT NULL,
    time INTEGER NOT NULL
);

CREATE INDEX snapshots_stream_version ON snapshots (stream, version, seq);
