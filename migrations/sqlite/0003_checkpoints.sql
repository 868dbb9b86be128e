-- Durable consumer positions; `time` is microseconds since the epoch.
CREATE TABLE checkpoints (
    consumer TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    time BIGINT NOT NULL
);
