-- Roles recsys_writer (the pipeline) and recsys_reader (downstream apps), so apps can read the serving views and nothing else.
-- Roles are cluster-wide: create each only if missing, and tolerate a migrator in another database winning the race.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'recsys_writer') THEN
        BEGIN
            CREATE ROLE recsys_writer NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'recsys_reader') THEN
        BEGIN
            CREATE ROLE recsys_reader NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;
