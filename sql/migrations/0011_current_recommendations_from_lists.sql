-- View current_recommendations now unnests the current batch's lists: same columns and types as before, so apps see no change.
-- The batch id is still a scalar sub-select (an InitPlan) that prunes the scan to one partition at run time, and a
-- filter on user_id is pushed below the unnest, so a user's top-K is one index lookup and one tuple.
CREATE OR REPLACE VIEW recsys.current_recommendations AS
SELECT l.user_id, u.rank::smallint AS rank, u.item_id, u.score, u.reason, l.batch_id,
       (SELECT c.ds FROM recsys.current_batch AS c) AS ds
FROM recsys.recommendation_lists AS l
CROSS JOIN LATERAL unnest(string_to_array(l.item_ids, E'\x1f'), l.scores, string_to_array(l.reasons, E'\x1f', ''))
    WITH ORDINALITY AS u (item_id, score, reason, rank)
WHERE l.batch_id = (SELECT c.batch_id FROM recsys.current_batch AS c);
