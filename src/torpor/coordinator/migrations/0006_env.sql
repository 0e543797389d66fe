-- Environment variables of a project, given to its runs at each start
-- (torpor env set/list/unset). A secret's value is sealed (AES-256-GCM, under
-- a key derived from the snapshot KEK whose id is kept beside it, with the
-- project and name as authenticated data: torpor/_secretbox.py); a plain
-- value is kept as it is.
CREATE TABLE project_env (
    project     text NOT NULL,
    name        text NOT NULL,
    secret      boolean NOT NULL,
    value       text,
    sealed      bytea,
    key_id      text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, name),
    CHECK ((secret AND value IS NULL AND sealed IS NOT NULL AND key_id IS NOT NULL)
           OR (NOT secret AND value IS NOT NULL AND sealed IS NULL))
);
