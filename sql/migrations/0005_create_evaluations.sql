-- Table evaluations: one row per gate decision with every model's metrics side by side and the reasons, so a decision can be audited.
CREATE TABLE recsys.evaluations (
    evaluation_id    bigint GENERATED ALWAYS AS IDENTITY,
    ds               date NOT NULL,
    model_version    text NOT NULL,
    champion_version text,
    metrics          jsonb NOT NULL,
    decision         text NOT NULL,
    reasons          jsonb NOT NULL DEFAULT '[]'::jsonb,
    forced_by        text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT evaluations_pkey PRIMARY KEY (evaluation_id),
    CONSTRAINT evaluations_model_version_fkey
        FOREIGN KEY (model_version) REFERENCES recsys.models (model_version),
    CONSTRAINT evaluations_decision_check CHECK (decision IN ('pass', 'fail', 'forced')),
    CONSTRAINT evaluations_reasons_check CHECK (jsonb_typeof(reasons) = 'array'),
    CONSTRAINT evaluations_forced_by_check CHECK (decision <> 'forced' OR forced_by IS NOT NULL)
);

CREATE INDEX evaluations_model_version_idx ON recsys.evaluations (model_version);
