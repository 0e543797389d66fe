-- Environments: a deployment's third-party packages, resolved and built by
-- `torpor deploy`, stored content-addressed (environments/<id>.tar.zst) so
-- every host gets the same bytes. One row per environment; deployments with
-- the same dependencies share it.
CREATE TABLE environments (
    id            text PRIMARY KEY,             -- env-<24 hex>: hash of the pinned set, Python and platform
    location      text NOT NULL,                -- store key
    sha256        text NOT NULL,                -- of the stored (compressed) archive
    size_bytes    bigint NOT NULL,
    python        text NOT NULL,                -- "3.11"
    platform      text NOT NULL,
    requirements  text[] NOT NULL,              -- the pinned set, name==version
    created_at    timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE deployments ADD COLUMN environment_id text REFERENCES environments (id);
