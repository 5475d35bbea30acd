-- Table models: every trained model, its artifact, metrics and lifecycle, so the gate and a person can see what served when.
CREATE TABLE recsys.models (
    model_version    text NOT NULL,
    ds               date NOT NULL,
    kind             text NOT NULL,
    artifact_path    text,
    status           text NOT NULL DEFAULT 'challenger',
    metrics          jsonb,
    config           jsonb,
    data_fingerprint text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    promoted_at      timestamptz,
    CONSTRAINT models_pkey PRIMARY KEY (model_version),
    CONSTRAINT models_status_check CHECK (status IN ('challenger', 'champion', 'retired', 'rejected'))
);
