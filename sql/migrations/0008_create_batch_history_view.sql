-- View batch_history: every batch with its status, counts and error, and which one serves, for `recsys status`.
CREATE VIEW recsys.batch_history AS
SELECT b.batch_id, b.ds, b.model_version, b.status, b.row_count, b.user_count, b.k, b.run_id,
       b.started_at, b.published_at, b.finished_at, b.error,
       b.batch_id IS NOT DISTINCT FROM (SELECT c.batch_id FROM recsys.current_batch AS c) AS is_current
FROM recsys.batches AS b;
