-- Table batches: one row per attempt to publish a night's recommendations, so every load, switch and failure is visible.
CREATE TABLE recsys.batches (
    batch_id      bigint GENERATED ALWAYS AS IDENTITY,
    ds            date NOT NULL,
    model_version text,
    status        text NOT NULL DEFAULT 'loading',
    row_count     bigint,
    user_count    integer,
    k             integer,
    run_id        text,
    started_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    finished_at   timestamptz,
    error         text,
    summary       jsonb,
    CONSTRAINT batches_pkey PRIMARY KEY (batch_id),
    CONSTRAINT batches_status_check
        CHECK (status IN ('loading', 'validating', 'published', 'replaced', 'failed', 'dropped')),
    CONSTRAINT batches_k_check CHECK (k > 0),
    CONSTRAINT batches_published_at_check CHECK (status <> 'published' OR published_at IS NOT NULL)
);

-- At most one published batch per date (re-publishing marks the old one 'replaced' first);
-- the same index serves current_batch's "latest published ds" lookup.
CREATE UNIQUE INDEX batches_ds_published_key ON recsys.batches (ds) WHERE status = 'published';
