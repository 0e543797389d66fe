-- The agent stream (agents.session_id) a run's StartRun/RestoreRun was sent on.
-- A STARTING or RESTORING run that a heartbeat on that same stream does not
-- list has not reached the agent yet (the stream is ordered and the agent
-- lists a run from the moment it reads the command); only once the agent is
-- on a newer stream may the command be taken for lost (docs/coordinator.md,
-- "The agent channel contract"). NULL for runs placed before this column.
ALTER TABLE runs ADD COLUMN placed_session text;
