-- A claim's leases as one row instead of a row per event (API.md, Managed
-- subscriptions): a turn of claims writes one row per claim served and an
-- acknowledgement deletes or shortens it, where a row per event cost an
-- insert and a delete for every delivery.
--
-- `token` names the claim's leases (each lease is `{position}.{token}.{mac}`),
-- `events` lists the events still held as a JSON array of
-- `[global_position, attempt, stream]`, oldest first, `held` how many there
-- are, `first_position` the earliest, and `digest` a digest of their
-- positions: an acknowledgement naming all of them (the usual one) deletes
-- the row by it in one statement, without reading it first. When `expires`
-- has passed, the next turn of claims moves the events back to
-- `subscription_events` to be delivered again (or parked, after
-- `max_deliveries`).
CREATE TABLE subscription_leases (
    subscription TEXT NOT NULL,
    token TEXT NOT NULL,
    consumer TEXT NOT NULL,
    expires INTEGER NOT NULL,
    first_position INTEGER NOT NULL,
    held INTEGER NOT NULL,
    digest TEXT NOT NULL,
    events TEXT NOT NULL,
    PRIMARY KEY (subscription, token)
);

-- "Which leases have run out?", for every turn of claims.
CREATE INDEX subscription_leases_expires ON subscription_leases (subscription, expires);

-- `subscription_events` now holds only events not leased: waiting behind
-- their stream, waiting out a retry's backoff, due again, or parked. Events
-- leased under the old layout are delivered again (their leases go stale),
-- with the attempt they had: at least once, as always.
ALTER TABLE subscription_events DROP COLUMN lease;
ALTER TABLE subscription_events DROP COLUMN consumer;
ALTER TABLE subscription_events DROP COLUMN lease_expires;
