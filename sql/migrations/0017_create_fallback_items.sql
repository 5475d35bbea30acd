-- Table fallback_items: each batch's list of popular items, for users the batch has no list for, published in the same switch as the batch.
-- Sharing the batch id means a user without a list of their own gets the fallback of the night now serving, never another's.
-- K rows per batch, so a plain table: the switch inserts them in its transaction, retention deletes them with their batch.
CREATE TABLE recsys.fallback_items (
    batch_id bigint   NOT NULL,
    rank     smallint NOT NULL,
    item_id  text     NOT NULL,
    score    real     NOT NULL,
    reason   text     NOT NULL DEFAULT 'popular',
    CONSTRAINT fallback_items_pkey PRIMARY KEY (batch_id, rank),
    CONSTRAINT fallback_items_batch_id_item_id_key UNIQUE (batch_id, item_id),
    CONSTRAINT fallback_items_batch_id_fkey
        FOREIGN KEY (batch_id) REFERENCES recsys.batches (batch_id) ON DELETE CASCADE,
    CONSTRAINT fallback_items_rank_check CHECK (rank > 0)
);

ALTER TABLE recsys.fallback_items OWNER TO recsys_writer;
