-- Privileges: recsys_writer owns and writes the store; recsys_reader may only SELECT the views, never the tables.
-- The writer owns the tables because ATTACH/DETACH PARTITION require ownership; views run with their owner's rights,
-- so the reader needs no grant on the tables behind them.
GRANT USAGE, CREATE ON SCHEMA recsys TO recsys_writer;
GRANT USAGE ON SCHEMA recsys TO recsys_reader;

ALTER TABLE recsys.batches OWNER TO recsys_writer;
ALTER TABLE recsys.recommendations OWNER TO recsys_writer;
ALTER TABLE recsys.models OWNER TO recsys_writer;
ALTER TABLE recsys.evaluations OWNER TO recsys_writer;
ALTER VIEW recsys.current_batch OWNER TO recsys_writer;
ALTER VIEW recsys.current_recommendations OWNER TO recsys_writer;
ALTER VIEW recsys.batch_history OWNER TO recsys_writer;

GRANT SELECT ON recsys.current_batch, recsys.current_recommendations, recsys.batch_history TO recsys_reader;
