-- A user's top-k list from the batch now serving; the one query a downstream app needs (recsys_reader may run it).
SELECT item_id, score, rank, reason
FROM recsys.current_recommendations
WHERE user_id = %(user_id)s
ORDER BY rank
LIMIT %(k)s
