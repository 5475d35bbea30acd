-- Table similar_item_lists: each item's top-K neighbours, one row per item, one partition per batch, published in the same switch as the user lists.
-- Sharing the batch id means the similar items an app shows always come from the same night as the recommendations.
-- Same layout as recommendation_lists: neighbour ids joined by U+001F, scores as real[].
CREATE TABLE recsys.similar_item_lists (
    batch_id         bigint NOT NULL,
    item_id          text   NOT NULL,
    similar_item_ids text   NOT NULL,
    scores           real[] NOT NULL,
    CONSTRAINT similar_item_lists_pkey PRIMARY KEY (batch_id, item_id)
) PARTITION BY LIST (batch_id);

COMMENT ON COLUMN recsys.similar_item_lists.similar_item_ids IS 'neighbour item ids in rank order, joined by U+001F';

ALTER TABLE recsys.similar_item_lists OWNER TO recsys_writer;
