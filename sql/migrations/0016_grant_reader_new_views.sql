-- Privileges for the views added in 0014 and 0015: owned by recsys_writer (they run with its rights), SELECT for recsys_reader only.
ALTER VIEW recsys.current_similar_items OWNER TO recsys_writer;
ALTER VIEW recsys.previous_batch OWNER TO recsys_writer;
ALTER VIEW recsys.previous_recommendations OWNER TO recsys_writer;

GRANT SELECT ON recsys.current_similar_items, recsys.previous_batch, recsys.previous_recommendations TO recsys_reader;
