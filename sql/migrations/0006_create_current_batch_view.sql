-- View current_batch: the published batch of the latest ds, so backfilling an older date never displaces a newer date's batch.
CREATE VIEW recsys.current_batch AS
SELECT b.batch_id, b.ds, b.model_version, b.k, b.row_count, b.user_count, b.run_id, b.published_at
FROM recsys.batches AS b
WHERE b.status = 'published'
ORDER BY b.ds DESC, b.published_at DESC, b.batch_id DESC
LIMIT 1;
