-- A user's top-k list from the batch now serving; the one query a downstream app needs (recsys_reader may run it).
-- A user the batch has no list for gets its fallback list (reason 'popular'). One statement, so the user's list
-- and the fallback come from the same batch even across a switch.
WITH own AS (
    SELECT r.item_id, r.score, r.rank, r.reason
    FROM recsys.current_recommendations AS r
    WHERE r.user_id = %(user_id)s
)
SELECT item_id, score, rank, reason
FROM own
UNION ALL
SELECT f.item_id, f.score, f.rank, f.reason
FROM recsys.current_fallback AS f
WHERE NOT EXISTS (SELECT 1 FROM own)
ORDER BY rank
LIMIT %(k)s
