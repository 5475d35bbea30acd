-- Table recommendation_lists: one row per user and batch holding the ranked list, so a batch loads, indexes and is read as one tuple per user.
-- It takes over from the row-per-rank table recommendations (1 tuple per user instead of K: ~K times fewer tuples to COPY,
-- index and look up). Item ids and reasons are each one text joined by U+001F (the ASCII unit separator, which ids
-- never contain; the publisher checks), split again by the views: one text field loads about twice as fast as a
-- text[] of K elements. Batches already attached to recommendations are converted here, each into its own list
-- partition, so the batch now serving keeps serving across the upgrade. Same partitioning and ownership as 0003, 0009.
CREATE TABLE recsys.recommendation_lists (
    batch_id bigint NOT NULL,
    user_id  text   NOT NULL,
    item_ids text   NOT NULL,
    scores   real[] NOT NULL,
    reasons  text,
    CONSTRAINT recommendation_lists_pkey PRIMARY KEY (batch_id, user_id)
) PARTITION BY LIST (batch_id);

COMMENT ON COLUMN recsys.recommendation_lists.item_ids IS 'item ids in rank order, joined by U+001F';
COMMENT ON COLUMN recsys.recommendation_lists.scores IS 'scores in rank order, one per item id';
COMMENT ON COLUMN recsys.recommendation_lists.reasons IS 'reasons in rank order, joined by U+001F; an empty one reads as NULL';

ALTER TABLE recsys.recommendation_lists OWNER TO recsys_writer;

DO $$
DECLARE
    part record;
    name text;
BEGIN
    FOR part IN
        SELECT c.relname, substr(c.relname, 18)::bigint AS batch_id
        FROM pg_inherits AS i
        JOIN pg_class AS c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'recsys.recommendations'::regclass
        ORDER BY 2
    LOOP
        name := 'recommendation_lists_b' || part.batch_id;
        EXECUTE format(
            'CREATE TABLE recsys.%I (LIKE recsys.recommendation_lists INCLUDING DEFAULTS, '
            'CONSTRAINT %I CHECK (batch_id = %s))',
            name, name || '_batch_id_check', part.batch_id);
        EXECUTE format(
            $sql$INSERT INTO recsys.%I (batch_id, user_id, item_ids, scores, reasons)
                 SELECT batch_id, user_id, string_agg(item_id, E'\x1f' ORDER BY rank),
                        array_agg(score ORDER BY rank), string_agg(coalesce(reason, ''), E'\x1f' ORDER BY rank)
                 FROM recsys.%I GROUP BY batch_id, user_id$sql$,
            name, part.relname);
        EXECUTE format('ALTER TABLE recsys.%I ADD CONSTRAINT %I PRIMARY KEY (batch_id, user_id)', name, name || '_pkey');
        EXECUTE format('ALTER TABLE recsys.%I OWNER TO recsys_writer', name);
        EXECUTE format(
            'ALTER TABLE recsys.recommendation_lists ATTACH PARTITION recsys.%I FOR VALUES IN (%s)',
            name, part.batch_id);
    END LOOP;
END
$$;
