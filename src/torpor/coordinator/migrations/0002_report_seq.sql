-- Reports are applied exactly once: an agent numbers them (seq) per process
-- (incarnation); the last one applied commits with its effect, and a replayed
-- one at or below it is acknowledged without being applied again.
ALTER TABLE agents ADD COLUMN incarnation text;
ALTER TABLE agents ADD COLUMN last_seq bigint NOT NULL DEFAULT 0;
