-- The network mode each checkpoint was taken in, as its agent reported it
-- (NULL for checkpoints recorded before): a run dumped in "host" mode can only
-- be restored by an agent that allows the host network.
ALTER TABLE checkpoints ADD COLUMN network text;

-- Why a run that is ready to start or restore is not placed (no agent with a
-- free slot can take it); NULL once it is placed or when nothing is known.
ALTER TABLE runs ADD COLUMN unplaced text;
