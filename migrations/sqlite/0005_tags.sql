-- Tags (API.md, Tags and consistency boundaries). `events.tags` keeps an
-- event's tags as a JSON array in the order written (NULL: none), to read
-- them back; `event_tags` holds one row per tag of an event, with the
-- event's type, so that a tag read or an append's condition costs what it
-- matches, not what the store holds: by tag, or by tag and type. Type-only
-- query items use `events_type`.
ALTER TABLE events ADD COLUMN tags text;

CREATE TABLE event_tags (
    tag text NOT NULL,
    type text NOT NULL,
    global_position bigint NOT NULL,
    PRIMARY KEY (tag, global_position)
);

CREATE INDEX event_tags_type ON event_tags (tag, type, global_position);

CREATE INDEX events_type ON events (type, global_position);
