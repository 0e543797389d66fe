-- The snapshot key-encryption key (KEK) of a deployment that gives its
-- coordinators no --snapshot-key-file: generated once by the first coordinator
-- that starts (one row at most), handed to agents when they register. Also
-- read by coordinators that do have a key file, so snapshots sealed under it
-- before a move to key files still open (coordinator/_snapshot_keys.py).
CREATE TABLE snapshot_key (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    id          text NOT NULL,                                 -- its fingerprint, "kek-..."
    key         bytea NOT NULL CHECK (octet_length(key) = 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The key each checkpoint is sealed under, as its agent reported it; NULL for
-- checkpoints recorded before snapshots were encrypted. A restore tells the
-- agent to expect it, so an unencrypted manifest put in its place is refused.
ALTER TABLE checkpoints ADD COLUMN key_id text;
