-- Leases: the worker that drives each run, until when, and the token that
-- fences its writes (raised at each takeover); and when the run next needs
-- a driver (milliseconds since the epoch; NULL: only when a request comes).
ALTER TABLE cairn_runs
    ADD COLUMN lease_owner TEXT,
    ADD COLUMN lease_token BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN lease_until TIMESTAMPTZ,
    ADD COLUMN wake_at     BIGINT;
-- Runs left going, or waiting at gates (their deadlines are read again by
-- the worker that claims them), are due at once.
UPDATE cairn_runs SET wake_at = 0
 WHERE status IN ('pending', 'running', 'waiting_acceptance', 'waiting_approval',
                  'waiting_clarification', 'waiting_conversation');
CREATE INDEX cairn_runs_due ON cairn_runs (wake_at) WHERE wake_at IS NOT NULL;

-- Requests for a run handed to the worker that drives it, and its answer.
CREATE TABLE cairn_asks (
    id       BIGSERIAL PRIMARY KEY,
    run_id   TEXT NOT NULL,
    worker   TEXT NOT NULL,
    body     TEXT NOT NULL,
    answer   TEXT,
    asked_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX cairn_asks_open ON cairn_asks (worker, id) WHERE answer IS NULL;
