-- torpor schema, version 1. Statuses are the RunStatus names of common.proto.

CREATE TABLE deployments (
    version          text PRIMARY KEY,
    seq              bigserial NOT NULL UNIQUE,
    project          text NOT NULL,
    bundle_location  text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- One row per task per deployed version; settings is the TaskSettings message.
CREATE TABLE tasks (
    task_id          text NOT NULL,
    version          text NOT NULL REFERENCES deployments (version),
    settings         bytea NOT NULL,
    PRIMARY KEY (task_id, version)
);

CREATE TABLE runs (
    id               text PRIMARY KEY,
    seq              bigserial NOT NULL UNIQUE,          -- FIFO tie-break and list order
    task             text NOT NULL,
    version          text NOT NULL,
    status           text NOT NULL,
    attempt          integer NOT NULL DEFAULT 1,
    generation       bigint NOT NULL DEFAULT 0,          -- bumped by every start/restore claim
    payload_json     text NOT NULL,
    output_json      text,
    error            text,
    traceback        text,
    tags             text[] NOT NULL DEFAULT '{}',
    queue            text NOT NULL,
    concurrency_key  text NOT NULL DEFAULT '',
    concurrency_limit integer NOT NULL DEFAULT 0,       -- copied from the task: 0 = unlimited
    idempotency_key  text,
    parent_run_id    text,
    agent            text,                               -- set while on an agent; last agent once finished
    max_attempts     integer NOT NULL,
    retry_factor     double precision NOT NULL,
    retry_min        double precision NOT NULL,
    retry_max        double precision NOT NULL,
    retry_randomize  boolean NOT NULL,
    max_duration     double precision NOT NULL DEFAULT 0,
    exec_seconds     double precision NOT NULL DEFAULT 0, -- execution time of this attempt before exec_started_at
    exec_started_at  timestamptz,                        -- start of the current RUNNING stretch
    exec_deadline    timestamptz,                        -- when max_duration runs out, while RUNNING
    waiting_on       text,                               -- wait_id of the wait being suspended in
    host_failures    integer NOT NULL DEFAULT 0,         -- of this attempt
    metadata_json    text NOT NULL DEFAULT '{}',
    ready_at         timestamptz NOT NULL DEFAULT now(), -- not before (delay, backoff); FIFO key
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Work the scheduler claims: queued runs, and restores waiting for a host.
CREATE INDEX runs_claimable ON runs (ready_at, seq)
    WHERE status = 'QUEUED' OR (status = 'RESTORING' AND agent IS NULL);
-- Runs holding a slot on an agent (and a unit of their queue's concurrency).
CREATE INDEX runs_on_agent ON runs (agent)
    WHERE agent IS NOT NULL AND status IN ('STARTING', 'RUNNING', 'SUSPENDING', 'RESTORING');
CREATE INDEX runs_active_queue ON runs (queue, concurrency_key)
    WHERE agent IS NOT NULL AND status IN ('STARTING', 'RUNNING', 'SUSPENDING', 'RESTORING');
CREATE INDEX runs_retry_due ON runs (ready_at) WHERE status = 'RETRY_WAIT';
CREATE INDEX runs_deadline ON runs (exec_deadline) WHERE exec_deadline IS NOT NULL;
CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE INDEX runs_task ON runs (task, seq);
CREATE INDEX runs_status ON runs (status, seq);
CREATE INDEX runs_tags ON runs USING gin (tags);
CREATE INDEX runs_created ON runs (created_at);

CREATE TABLE attempts (
    run_id       text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    number       integer NOT NULL,
    status       text NOT NULL,
    error        text,
    traceback    text,
    agent        text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (run_id, number)
);

CREATE TABLE checkpoints (
    run_id       text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    id           text NOT NULL,
    kind         text NOT NULL,                 -- SUSPEND | PERIODIC | ON_DEMAND
    size_bytes   bigint NOT NULL DEFAULT 0,
    raw_bytes    bigint NOT NULL DEFAULT 0,
    duration_ms  bigint NOT NULL DEFAULT 0,
    agent        text NOT NULL,
    location     text NOT NULL,                 -- store key of the manifest
    generation   bigint NOT NULL,
    attempt      integer NOT NULL,
    wait_id      text,                          -- the wait a SUSPEND checkpoint sleeps in
    request_id   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    released_at  timestamptz,                   -- no longer restorable; to delete from the store
    deleted_at   timestamptz,                   -- gone from the store
    PRIMARY KEY (run_id, id)
);
CREATE INDEX checkpoints_to_delete ON checkpoints (released_at)
    WHERE released_at IS NOT NULL AND deleted_at IS NULL;

CREATE TABLE tokens (
    id            text PRIMARY KEY,
    run_id        text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    timeout_at    timestamptz,
    completed_at  timestamptz,
    data_json     text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE waitpoints (
    id            bigserial PRIMARY KEY,
    run_id        text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt       integer NOT NULL,
    wait_id       text NOT NULL,
    kind          text NOT NULL,                -- time | token | children
    due_at        timestamptz,                  -- time: the deadline; token: its timeout
    token_id      text,
    child_ids     text[],
    resolved_at   timestamptz,
    result_json   text,
    timed_out     boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, attempt, wait_id)
);
CREATE INDEX waitpoints_due ON waitpoints (due_at) WHERE resolved_at IS NULL AND due_at IS NOT NULL;
CREATE INDEX waitpoints_token ON waitpoints (token_id) WHERE token_id IS NOT NULL AND resolved_at IS NULL;
CREATE INDEX waitpoints_children ON waitpoints USING gin (child_ids) WHERE resolved_at IS NULL;

CREATE TABLE agents (
    name              text PRIMARY KEY,
    coordinator_id    text,                     -- the coordinator holding its stream; NULL when disconnected
    session_id        text,
    slots             integer NOT NULL,
    slots_used        integer NOT NULL DEFAULT 0, -- as the agent last reported it
    facts             bytea,                    -- HostFacts
    labels            jsonb NOT NULL DEFAULT '{}',
    alive             boolean NOT NULL DEFAULT true,
    lease_expires_at  timestamptz NOT NULL,
    connected_at      timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agents_lease ON agents (lease_expires_at) WHERE alive;

-- Transactional outbox: a command commits with the state change that caused
-- it; the coordinator holding the agent's stream delivers and deletes it.
CREATE TABLE agent_commands (
    id          bigserial PRIMARY KEY,
    agent       text NOT NULL,
    payload     bytea NOT NULL,                 -- CoordinatorMessage
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_commands_agent ON agent_commands (agent, id);

CREATE TABLE idempotency_keys (
    task        text NOT NULL,
    key         text NOT NULL,
    run_id      text NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (task, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

CREATE TABLE run_events (
    id        bigserial PRIMARY KEY,
    run_id    text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    time      timestamptz NOT NULL DEFAULT clock_timestamp(),
    type      text NOT NULL,
    detail    text NOT NULL DEFAULT '',
    agent     text,
    attempt   integer NOT NULL DEFAULT 0,
    ref       text                              -- e.g. the request_id of a checkpoint command
);
CREATE INDEX run_events_run ON run_events (run_id, id);

CREATE TABLE log_chunks (
    id        bigserial PRIMARY KEY,
    run_id    text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt   integer NOT NULL,
    stream    text NOT NULL,
    data      bytea NOT NULL,
    time      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX log_chunks_run ON log_chunks (run_id, id);

-- Client API keys and agent join tokens; only the sha256 of the secret is kept.
CREATE TABLE api_keys (
    id             text PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('client', 'agent')),
    secret_sha256  text NOT NULL UNIQUE,
    name           text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz
);
