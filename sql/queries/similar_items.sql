-- An item's top-k most similar items from the batch now serving, for "similar items" shelves (recsys_reader may run it).
SELECT similar_item_id, score, rank
FROM recsys.current_similar_items
WHERE item_id = %(item_id)s
ORDER BY rank
LIMIT %(k)s
