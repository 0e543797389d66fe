-- The network mode each checkpoint was taken in, as its agent reported it
-- (NULL for checkpoints recorded before): a run dumped in "host" mode can only
-- be restored by an agent that allows the host network.
ALTER TABLE checkpoints ADD COLUMN network text;

-- Why a run that is ready to start or restore is not placed (no agent with a
-- free slot can take it); NULL once it is placed or when nothing is known.
ALTER TABLE runs ADD COLUMN unplaced text;

-- The memory limit of the run's task (0: none), copied at trigger: the
-- scheduler adds up the limits of the runs on an agent to see what room its
-- offered memory (HostFacts.memory_offered_bytes) has left.
ALTER TABLE runs ADD COLUMN memory_bytes bigint NOT NULL DEFAULT 0;
