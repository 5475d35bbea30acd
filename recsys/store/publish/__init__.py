"""Publish one night's lists: load off to the side, validate, switch in atomically.

The store keeps one row per user (`recommendation_lists`) and one per item (`similar_item_lists`)
holding the ranked list (item ids and reasons each one text joined by U+001F, scores a real[]),
so a night of U users x K items is U tuples to COPY, index and look up, not U x K. The views
`current_recommendations` and `current_similar_items` unnest them back into (key, rank, item,
score) rows. Publishing a batch:

1. takes a session advisory lock on its date: a second publisher of the same date stops at once
   with a clear message (recorded as a 'failed' batch), and batches of the date whose publisher
   died mid-way are cleaned up (a dead publisher's lock is gone, so nobody else holds it);
2. commits a `batches` row (status 'loading'), so even a failed load is visible;
3. streams the Parquet rows in chunks cut at whole users; each chunk is checked vectorised on the
   client (rank in 1..k, ranks run 1..n, no duplicate (user, rank) or (user, item), finite
   scores, every item known, no separator inside an id or reason) and encoded to binary COPY
   tuples, then COPY FREEZE writes them into a side table created in the same transaction; its
   primary key is built after the load (input not in (user, rank) order is sorted in memory);
4. status 'validating': SQL counts what landed and compares it with what was sent, the expected
   users and the expected rows (users x K within the exclusions); any failure marks the batch
   'failed' with the check and an example row, drops the side tables, leaves the current batch;
5. one short transaction attaches the side tables as partitions, publishes the batch and marks
   the date's previous batch 'replaced'. Readers of the views see the old complete batch or the
   new complete batch, never a mix and never nothing. The batch's fallback list (popular items,
   for users it has no list for) goes into `fallback_items` in that same transaction.

Modules, in the order a batch meets them: `lists` (what a batch holds, the errors), `lifecycle`
(the date lock, the `batches` row, cleanup), `load` and `encode` (chunks, checks, binary COPY),
`fallback`, `switch` (counts and the switch), `batch` (`publish_batch`, which runs them in turn).
"""

from recsys.store.publish.batch import PublishResult, publish_batch
from recsys.store.publish.encode import encode_lists
from recsys.store.publish.fallback import FALLBACK_SCHEMA
from recsys.store.publish.lifecycle import PUBLISH_LOCK_NAMESPACE, drop_side_tables
from recsys.schema import ITEM_ID, RANK, REASON, RECS_SCHEMA, SCORE, SIMILAR_ITEM_ID, SIMILAR_SCHEMA, USER_ID
from recsys.store.publish.lists import (
    RECOMMENDATIONS,
    REQUIRED_COLUMNS,
    SEPARATOR,
    SIMILAR_ITEMS,
    SPECS,
    BatchValidationError,
    ListSpec,
    PublishConflictError,
    side_table,
)

__all__ = [
    "FALLBACK_SCHEMA", "ITEM_ID", "PUBLISH_LOCK_NAMESPACE", "RANK", "REASON", "RECOMMENDATIONS", "RECS_SCHEMA",
    "REQUIRED_COLUMNS", "SCORE", "SEPARATOR", "SIMILAR_ITEM_ID", "SIMILAR_ITEMS", "SIMILAR_SCHEMA", "SPECS",
    "USER_ID", "BatchValidationError", "ListSpec", "PublishConflictError", "PublishResult", "drop_side_tables",
    "encode_lists", "publish_batch", "side_table",
]
