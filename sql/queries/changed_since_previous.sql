-- Items a user gained ('added') or lost ('removed') between the previous batch and the current one, to explain a change (recsys_reader may run it).
-- "Previous" is the view previous_batch: the batch that served before the current one (a replaced batch of the same
-- date counts) while its lists still exist; with none, every current item is 'added'. Reads views only.
WITH cur AS (
    SELECT c.item_id, c.rank
    FROM recsys.current_recommendations AS c
    WHERE c.user_id = %(user_id)s
),
prev AS (
    SELECT p.item_id, p.rank
    FROM recsys.previous_recommendations AS p
    WHERE p.user_id = %(user_id)s
)
SELECT 'added' AS change, cur.item_id, cur.rank
FROM cur
WHERE NOT EXISTS (SELECT 1 FROM prev WHERE prev.item_id = cur.item_id)
UNION ALL
SELECT 'removed' AS change, prev.item_id, prev.rank
FROM prev
WHERE NOT EXISTS (SELECT 1 FROM cur WHERE cur.item_id = prev.item_id)
ORDER BY change, rank
