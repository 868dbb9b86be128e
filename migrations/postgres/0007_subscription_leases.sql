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
    subscription TEXT COLLATE "C" NOT NULL,
    token TEXT COLLATE "C" NOT NULL,
    consumer TEXT COLLATE "C" NOT NULL,
    expires BIGINT NOT NULL,
    first_position BIGINT NOT NULL,
    held BIGINT NOT NULL,
    digest TEXT NOT NULL,
    events TEXT NOT NULL,
    PRIMARY KEY (subscription, token)
);

-- "Which leases have run out?", for every turn of claims.
CREATE INDEX subscription_leases_expires ON subscription_leases (subscription, expires);

-- `subscription_events` now holds only events not leased. Events leased
-- under the old layout stay where they are, their old leases answering
-- stale: due again once those leases would have run out (never to two
-- consumers at once), with the attempt they had, or parked if that was
-- their last allowed delivery, as running out would have done. Every
-- instance must be stopped for the upgrade: an older one reads the columns
-- dropped here.
UPDATE subscription_events
SET parked_at = CAST(extract(epoch FROM clock_timestamp()) * 1000000 AS BIGINT),
    reason = 'leased at its last allowed delivery when the store was upgraded'
WHERE lease_expires IS NOT NULL
  AND attempt >= (SELECT CAST(CAST(s.definition AS json) ->> 'max_deliveries' AS BIGINT) FROM subscriptions s
                  WHERE s.name = subscription_events.subscription);
UPDATE subscription_events SET available_at = lease_expires
WHERE lease_expires IS NOT NULL AND parked_at IS NULL AND lease_expires > available_at;
ALTER TABLE subscription_events DROP COLUMN lease;
ALTER TABLE subscription_events DROP COLUMN consumer;
ALTER TABLE subscription_events DROP COLUMN lease_expires;
