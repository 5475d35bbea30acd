-- View current_similar_items: the current batch's neighbour lists, one row per (item, rank), for "similar items" shelves.
-- Empty when the batch now serving was published without similar items.
CREATE VIEW recsys.current_similar_items AS
SELECT l.item_id, u.rank::smallint AS rank, u.similar_item_id, u.score, l.batch_id,
       (SELECT c.ds FROM recsys.current_batch AS c) AS ds
FROM recsys.similar_item_lists AS l
CROSS JOIN LATERAL unnest(string_to_array(l.similar_item_ids, E'\x1f'), l.scores)
    WITH ORDINALITY AS u (similar_item_id, score, rank)
WHERE l.batch_id = (SELECT c.batch_id FROM recsys.current_batch AS c);
