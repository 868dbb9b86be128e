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
    name TEXT COLLATE "C" PRIMARY KEY,
    definition TEXT NOT NULL,
    lease_key TEXT NOT NULL,
    cursor BIGINT NOT NULL,
    created BIGINT NOT NULL,
    pusher TEXT,
    pusher_until BIGINT
);

-- The source events scanned and not yet acknowledged: waiting, leased
-- (`lease` and `lease_expires` set), waiting out a retry's backoff
-- (`available_at`), or parked (`parked_at`). An acknowledgement deletes the
-- row. `attempt` counts deliveries.
CREATE TABLE subscription_events (
    subscription TEXT COLLATE "C" NOT NULL,
    global_position BIGINT NOT NULL,
    stream TEXT COLLATE "C" NOT NULL,
    attempt BIGINT NOT NULL,
    lease TEXT,
    consumer TEXT,
    lease_expires BIGINT,
    available_at BIGINT NOT NULL,
    parked_at BIGINT,
    reason TEXT,
    PRIMARY KEY (subscription, global_position)
);

-- "Is an earlier event of this stream still unsettled?", for ordering by stream.
CREATE INDEX subscription_events_stream ON subscription_events (subscription, stream, global_position);

-- The consumers that claimed, and when they last did.
CREATE TABLE subscription_consumers (
    subscription TEXT COLLATE "C" NOT NULL,
    consumer TEXT COLLATE "C" NOT NULL,
    last_claim BIGINT NOT NULL,
    PRIMARY KEY (subscription, consumer)
);
