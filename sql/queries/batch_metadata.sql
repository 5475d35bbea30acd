-- Which batch is serving: its date, model, size and publish time, so an app can log what it showed (recsys_reader may run it).
SELECT batch_id, ds, model_version, k, row_count, user_count, run_id, published_at
FROM recsys.current_batch
