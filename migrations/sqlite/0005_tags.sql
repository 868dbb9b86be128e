-- Tags (API.md, Tags and consistency boundaries). `events.tags` keeps an
-- event's tags as a JSON array in the order written (NULL: none), to read
-- them back; `event_tags` holds one row per tag of an event, so that a tag
-- read or an append's condition costs what it matches, not what the store
-- holds. Type-only query items use `events_type`.
ALTER TABLE events ADD COLUMN tags text;

CREATE TABLE event_tags (
    tag text NOT NULL,
    global_position bigint NOT NULL,
    PRIMARY KEY (tag, global_position)
);

CREATE INDEX events_type ON events (type, global_position);
