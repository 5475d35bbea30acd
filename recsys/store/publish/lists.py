"""What a batch holds: the Parquet columns of each kind of ranked list, the tables they go to, the errors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pyarrow as pa

from recsys.errors import DatabaseError
from recsys.schema import ITEM_ID, REASON, RECS_SCHEMA, SCORE, SIMILAR_ITEM_ID, SIMILAR_SCHEMA, USER_ID

# The Parquet lists the score stage writes are a lake contract: their columns live in schema.
REQUIRED_COLUMNS = tuple(f.name for f in RECS_SCHEMA if not f.nullable)

# Text lists are stored as one text, their elements joined by the ASCII unit separator.
SEPARATOR = "\x1f"


@dataclass(frozen=True)
class ListSpec:
    """One kind of ranked list: its Parquet columns and the partitioned table that stores it."""

    label: str  # for messages
    parent: str  # partitioned table in schema recsys
    key: str  # one list per value of this column
    key_label: str  # "user" / "item", for messages
    item: str  # the ranked column
    schema: pa.Schema  # Parquet columns, normalised to these types
    arrays: tuple[tuple[str, str], ...]  # (Parquet column, table column), in table order: a string
    # column becomes one text joined by SEPARATOR, a float column a real[]
    known: tuple[str, ...]  # columns whose values must be known items


RECOMMENDATIONS = ListSpec(
    "recommendations", "recommendation_lists", USER_ID, "user", ITEM_ID, RECS_SCHEMA,
    ((ITEM_ID, "item_ids"), (SCORE, "scores"), (REASON, "reasons")), (ITEM_ID,),
)
SIMILAR_ITEMS = ListSpec(
    "similar items", "similar_item_lists", ITEM_ID, "item", SIMILAR_ITEM_ID, SIMILAR_SCHEMA,
    ((SIMILAR_ITEM_ID, "similar_item_ids"), (SCORE, "scores")), (ITEM_ID, SIMILAR_ITEM_ID),
)
SPECS = (RECOMMENDATIONS, SIMILAR_ITEMS)  # also the order in which their parents are locked


def side_table(batch_id: int, spec: ListSpec = RECOMMENDATIONS) -> str:
    """Unqualified name of a batch's partition of `spec` (a side table until attached)."""
    return f"{spec.parent}_b{int(batch_id)}"


class BatchValidationError(DatabaseError):
    """A batch failed a check before it was switched in; `check` names it, `example` shows a row."""

    def __init__(self, check: str, example: str, batch_id: int | None = None, ds: date | None = None):
        self.check = check
        self.example = example
        self.batch_id = batch_id
        where = f"batch {batch_id} " if batch_id is not None else "batch "
        where += f"for {ds} " if ds is not None else ""
        super().__init__(f"{where}failed check '{check}': {example}")


class PublishConflictError(DatabaseError):
    """Another publisher holds the date; this one stopped before changing anything."""

    def __init__(self, message: str, batch_id: int | None = None):
        self.batch_id = batch_id
        super().__init__(message)


def row_text(batch: pa.RecordBatch, i: int) -> str:
    """Row `i` of `batch` as `col=value, ...`, the example a failed check shows."""
    row = batch.slice(int(i), 1).to_pylist()[0]
    return ", ".join(f"{k}={v!r}" for k, v in row.items())
