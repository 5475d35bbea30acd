-- View current_recommendations: exactly the current batch's rows, the one thing downstream apps read.
-- The batch id is a scalar sub-select (an InitPlan), so PostgreSQL prunes the scan to that one partition at run time;
-- both sub-selects run in the statement's single snapshot, so batch_id and ds always agree.
CREATE VIEW recsys.current_recommendations AS
SELECT r.user_id, r.rank, r.item_id, r.score, r.reason, r.batch_id,
       (SELECT c.ds FROM recsys.current_batch AS c) AS ds
FROM recsys.recommendations AS r
WHERE r.batch_id = (SELECT c.batch_id FROM recsys.current_batch AS c);
