-- View current_fallback: the fallback list of the batch now serving, one row per rank; SELECT for recsys_reader only, as in 0016.
-- The batch id is a scalar sub-select, as in current_recommendations, so both views read the same batch in one statement.
CREATE VIEW recsys.current_fallback AS
SELECT f.rank, f.item_id, f.score, f.reason, f.batch_id,
       (SELECT c.ds FROM recsys.current_batch AS c) AS ds
FROM recsys.fallback_items AS f
WHERE f.batch_id = (SELECT c.batch_id FROM recsys.current_batch AS c);

ALTER VIEW recsys.current_fallback OWNER TO recsys_writer;

GRANT SELECT ON recsys.current_fallback TO recsys_reader;
