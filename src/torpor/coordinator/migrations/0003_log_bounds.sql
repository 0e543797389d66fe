-- Each attempt's log budget: output kept in log_chunks, and output dropped
-- (over the budget, or while an agent's outbox was full). A restore tells
-- the agent what the attempt kept already, so the budget holds across hosts.
ALTER TABLE attempts ADD COLUMN log_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN log_dropped_bytes bigint NOT NULL DEFAULT 0;
