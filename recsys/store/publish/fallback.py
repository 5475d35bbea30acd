"""The fallback list: one ranked list of popular items published with each batch, for users it has no list for.

K rows, so it is read whole, checked with the same row checks as the user lists (as one list,
keyed "popular"), and inserted by the switch in the transaction that publishes its batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.store.publish.encode import check_lists
from recsys.schema import ITEM_ID, RANK, REASON, SCORE
from recsys.store.publish.lists import BatchValidationError, ListSpec
from recsys.store.publish.load import normalise, open_dataset

POPULAR = "popular"
_LIST = "list"  # the one list's key column, added for the shared checks

FALLBACK_SCHEMA = pa.schema(
    [
        pa.field(RANK, pa.int16(), nullable=False),
        pa.field(ITEM_ID, pa.string(), nullable=False),
        pa.field(SCORE, pa.float32(), nullable=False),
        pa.field(REASON, pa.string(), nullable=True),
    ]
)
FALLBACK = ListSpec(
    "fallback list", "fallback_items", _LIST, "list", ITEM_ID, FALLBACK_SCHEMA,
    ((ITEM_ID, "item_id"), (SCORE, "score"), (REASON, "reason")), (ITEM_ID,),
)


@dataclass(frozen=True)
class Fallback:
    source: str
    table: pa.Table  # FALLBACK_SCHEMA, in rank order, every reason set

    @property
    def rows(self) -> int:
        return self.table.num_rows


def read_fallback(path: Path, k: int, known: pa.Array | None) -> Fallback:
    """The checked fallback list in `path`; BatchValidationError naming the check it fails."""
    dataset = open_dataset(path, FALLBACK.label, FALLBACK_SCHEMA)
    columns = [c for c in FALLBACK_SCHEMA.names if c in dataset.schema.names]
    chunks = [normalise(b, FALLBACK_SCHEMA) for b in dataset.to_batches(columns=columns) if b.num_rows]
    table = pa.Table.from_batches(chunks, schema=FALLBACK_SCHEMA).sort_by(RANK).combine_chunks()
    n = table.num_rows
    if n == 0:
        raise BatchValidationError("fallback list has at least one row", f"{path} has no rows")
    keyed = table.append_column(_LIST, pa.array([POPULAR] * n)).to_batches()[0]
    check_lists(keyed, FALLBACK, k, np.zeros(1, np.int64), np.array([n]), known)
    table = table.set_column(3, REASON, pc.fill_null(table.column(REASON), POPULAR))
    return Fallback(str(path), table)


def insert_fallback(conn, batch_id: int, fallback: Fallback) -> None:
    """The list's rows under `batch_id`, in one statement (inside the caller's transaction)."""
    t = fallback.table
    conn.execute(
        "INSERT INTO recsys.fallback_items (batch_id, rank, item_id, score, reason) "
        "SELECT %s, u.rank, u.item_id, u.score, u.reason "
        "FROM unnest(%s::smallint[], %s::text[], %s::real[], %s::text[]) AS u (rank, item_id, score, reason)",
        [batch_id] + [t.column(c).to_pylist() for c in FALLBACK_SCHEMA.names],
    )
