-- Views previous_batch and previous_recommendations: the batch that served before the current one, so apps can show what changed with views alone.
-- "Previous" is the latest published or replaced batch below the current one in (ds, published_at) order, so a
-- same-date re-publish counts; once retention has dropped it, the next older batch that still has its rows is used.
CREATE VIEW recsys.previous_batch AS
SELECT b.batch_id, b.ds, b.model_version, b.k, b.row_count, b.user_count, b.run_id, b.published_at
FROM recsys.batches AS b, recsys.current_batch AS now_serving
WHERE b.status IN ('published', 'replaced')
  AND (b.ds, b.published_at) < (now_serving.ds, now_serving.published_at)
ORDER BY b.ds DESC, b.published_at DESC, b.batch_id DESC
LIMIT 1;

CREATE VIEW recsys.previous_recommendations AS
SELECT l.user_id, u.rank::smallint AS rank, u.item_id, u.score, u.reason, l.batch_id,
       (SELECT p.ds FROM recsys.previous_batch AS p) AS ds
FROM recsys.recommendation_lists AS l
CROSS JOIN LATERAL unnest(string_to_array(l.item_ids, E'\x1f'), l.scores, string_to_array(l.reasons, E'\x1f', ''))
    WITH ORDINALITY AS u (item_id, score, reason, rank)
WHERE l.batch_id = (SELECT p.batch_id FROM recsys.previous_batch AS p);
