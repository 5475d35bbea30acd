-- Table recommendations, one LIST partition per batch, so a batch is loaded off to the side, attached atomically and dropped cheaply.
-- No CHECK or foreign key here: ATTACH would re-verify them inside the switch; the publisher validates each batch before it attaches.
-- The primary key includes batch_id because a unique index on a partitioned table must contain the partition key;
-- each side table builds the matching index before ATTACH, which then adopts it instead of building one.
CREATE TABLE recsys.recommendations (
    batch_id bigint   NOT NULL,
    user_id  text     NOT NULL,
    rank     smallint NOT NULL,
    item_id  text     NOT NULL,
    score    real     NOT NULL,
    reason   text,
    CONSTRAINT recommendations_pkey PRIMARY KEY (batch_id, user_id, rank)
) PARTITION BY LIST (batch_id);
