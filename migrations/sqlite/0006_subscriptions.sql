-- Managed subscriptions (API.md, Managed subscriptions). Times are
-- microseconds since the epoch.
--
-- `definition` is the subscription as created (JSON), `lease_key` signs its
-- leases (so a lease it never issued is told apart from one no longer
-- held), and `cursor` is how far the source has been scanned: every source
-- event at or before it either has a row in `subscription_events` or was
-- acknowledged. `pusher`/`pusher_until` name the instance that pushes a
-- push subscription's deliveries, and until when, so that one instance
-- pushes, whichever it is.
CREATE TABLE subscriptions (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    lease_key TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    created INTEGER NOT NULL,
    pusher TEXT,
    pusher_until INTEGER
);

-- The source events scanned and not yet acknowledged: waiting, leased
-- (`lease` and `lease_expires` set), waiting out a retry's backoff
-- (`available_at`), or parked (`parked_at`). An acknowledgement deletes the
-- row. `attempt` counts deliveries.
CREATE TABLE subscription_events (
    subscription TEXT NOT NULL,
    global_position INTEGER NOT NULL,
    stream TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    lease TEXT,
    consumer TEXT,
    lease_expires INTEGER,
    available_at INTEGER NOT NULL,
    parked_at INTEGER,
    reason TEXT,
    PRIMARY KEY (subscription, global_position)
);

-- "Is an earlier event of this stream still unsettled?", for ordering by stream.
CREATE INDEX subscription_events_stream ON subscription_events (subscription, stream, global_position);

-- The consumers that claimed, and when they last did.
CREATE TABLE subscription_consumers (
    subscription TEXT NOT NULL,
    consumer TEXT NOT NULL,
    last_claim INTEGER NOT NULL,
    PRIMARY KEY (subscription, consumer)
);
