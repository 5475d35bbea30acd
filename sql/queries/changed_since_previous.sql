-- Items a user gained ('added') or lost ('removed') between the previous published batch and the current one, to explain a change.
-- "Previous" is the batch that served before the current one (a replaced batch of the same date counts), while its
-- partition still exists; with none, every current item is 'added'. Reads the base tables, so it needs recsys_writer.
WITH cur AS (
    SELECT c.item_id, c.rank
    FROM recsys.current_recommendations AS c
    WHERE c.user_id = %(user_id)s
),
prev AS (
    SELECT r.item_id, r.rank
    FROM recsys.recommendations AS r
    WHERE r.user_id = %(user_id)s
      AND r.batch_id = (
          SELECT b.batch_id
          FROM recsys.batches AS b, recsys.current_batch AS now_serving
          WHERE b.status IN ('published', 'replaced')
            AND (b.ds, b.published_at) < (now_serving.ds, now_serving.published_at)
          ORDER BY b.ds DESC, b.published_at DESC
          LIMIT 1
      )
)
SELECT 'added' AS change, cur.item_id, cur.rank
FROM cur
WHERE NOT EXISTS (SELECT 1 FROM prev WHERE prev.item_id = cur.item_id)
UNION ALL
SELECT 'removed' AS change, prev.item_id, prev.rank
FROM prev
WHERE NOT EXISTS (SELECT 1 FROM cur WHERE cur.item_id = prev.item_id)
ORDER BY change, rank
