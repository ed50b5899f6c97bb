-- Runs: one row each, with the columns listings filter and sort on and
-- the summary (status, times, usage, figures) as JSON, kept as events append.
CREATE TABLE cairn_runs (
    run_id          TEXT PRIMARY KEY,
    workflow        TEXT NOT NULL,
    definition_name TEXT NOT NULL,
    definition      TEXT NOT NULL,
    files           TEXT NOT NULL,
    definition_hash TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    status          TEXT NOT NULL,
    triggered_by    TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    parent          TEXT,
    labels          JSONB NOT NULL,
    last_seq        BIGINT NOT NULL,
    summary         TEXT NOT NULL
);
CREATE INDEX cairn_runs_newest ON cairn_runs (created_at DESC, run_id DESC);
CREATE INDEX cairn_runs_workflow ON cairn_runs (workflow, created_at DESC);
CREATE INDEX cairn_runs_status ON cairn_runs (status);

-- Events: keyed by (run, seq), so of two writers appending after the same
-- event exactly one commits. Bodies are the exact JSON (not JSONB, which
-- would reorder object keys).
CREATE TABLE cairn_events (
    run_id TEXT NOT NULL REFERENCES cairn_runs (run_id) ON DELETE CASCADE,
    seq    BIGINT NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE cairn_snapshots (
    run_id TEXT NOT NULL REFERENCES cairn_runs (run_id) ON DELETE CASCADE,
    seq    BIGINT NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE cairn_tokens (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);

CREATE TABLE cairn_workflow_versions (
    workflow        TEXT NOT NULL,
    number          INTEGER NOT NULL,
    version         TEXT NOT NULL,
    hash            TEXT NOT NULL,
    definition_name TEXT NOT NULL,
    definition      TEXT NOT NULL,
    files           TEXT NOT NULL,
    registered_at   BIGINT NOT NULL,
    registered_by   TEXT NOT NULL,
    PRIMARY KEY (workflow, number),
    UNIQUE (workflow, version),
    UNIQUE (workflow, hash)
);
