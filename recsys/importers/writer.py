"""Write an imported dataset into the raw lake exactly as `recsys generate` does.

- `raw/events/date=YYYY-MM-DD/part-0.parquet`: the day's events (recsys.schema.EVENTS_SCHEMA),
  sorted by ts then user with a stable sort, so a user's events with equal timestamps keep
  the dataset's order; one folder per day that has events;
- `raw/items/date=YYYY-MM-DD/part-0.parquet`: catalogue rows (ITEMS_SCHEMA) of the items
  first seen that day. An item's created_at is UTC midnight of the day of its first event,
  so it is never after that event; items without events go to the first day. Every item an
  event names gets a row (the placeholder title "item <id>", i.e. no text, when the dataset
  has none for it).

Folders of the days written are replaced whole; raw days outside the dataset's span that
were already in the lake are left as they are (import into an empty lake root).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys import schema as S
from recsys.data.generate import DAY_US, EPOCH
from recsys.errors import InputError
from recsys.lake import Lake, write_partition

TS_TYPE = S.EVENTS_SCHEMA.field(S.TS).type
# Catalogue columns an importer provides; the writer adds created_at.
ITEM_COLUMNS = (S.ITEM_ID, S.TITLE, S.DESCRIPTION, S.CATEGORY, S.PRICE, S.AVAILABLE)

# Datasets without timestamps (amazon-seq, unisrec) get synthetic ones in this window.
SYNTHETIC_END = dt.date(2018, 9, 30)
SYNTHETIC_DAYS = 365
# Gaps between a user's consecutive interactions: log-normal, median a day, a long tail.
GAP_MEDIAN_S = 86_400.0
GAP_SIGMA = 1.5
GAP_RANGE_S = (60.0, 60 * 86_400.0)


@dataclass
class Dataset:
    """What an importer read: events in EVENTS_SCHEMA, items in ITEM_COLUMNS, and notes."""

    events: pa.Table
    items: pa.Table
    notes: dict = field(default_factory=dict)


def events_table(users, items, event_type, ts_us, rating=None) -> pa.Table:
    """An EVENTS_SCHEMA table from parallel arrays; `event_type` is one name or an array."""
    n = len(ts_us)
    types = pa.array([event_type] * n if isinstance(event_type, str) else event_type, pa.string())
    if rating is None:
        ratings = pa.nulls(n, pa.float64())
    else:
        r = np.asarray(rating, dtype=np.float64)
        ratings = pa.array(r, pa.float64(), mask=np.isnan(r))
    return pa.Table.from_arrays(
        [
            pa.array(users, pa.string()),
            pa.array(items, pa.string()),
            types,
            pa.array(np.asarray(ts_us, dtype=np.int64), TS_TYPE),
            ratings,
        ],
        schema=S.EVENTS_SCHEMA,
    )


def items_table(ids, titles, descriptions=None, categories=None, available=None, prices=None) -> pa.Table:
    n = len(ids)
    return pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.array(titles, pa.string()),
            pa.array(descriptions if descriptions is not None else [None] * n, pa.string()),
            pa.array(categories if categories is not None else [None] * n, pa.string()),
            pa.array(prices if prices is not None else [None] * n, pa.float64()),
            pa.array(available if available is not None else [True] * n, pa.bool_()),
        ],
        names=list(ITEM_COLUMNS),
    )


def sequence_timestamps(lengths: np.ndarray, seed: int = 0, end: dt.date = SYNTHETIC_END) -> np.ndarray:
    """Synthetic µs timestamps for sequences of the given lengths, laid out one after another.

    Each user's interactions are strictly increasing (whole seconds, at least one apart),
    so ordering by ts gives back the file's order; gaps are log-normal (median a day) and a
    user's sequence starts at a random point such that it ends inside the
    SYNTHETIC_DAYS-day window up to `end` (a longer one is squeezed into 95% of it).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    rng = np.random.default_rng(seed)
    n = int(lengths.sum())
    window = SYNTHETIC_DAYS * 86_400
    owner = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    is_first = np.zeros(n, dtype=bool)
    is_first[starts[lengths > 0]] = True
    gaps = np.clip(rng.lognormal(np.log(GAP_MEDIAN_S), GAP_SIGMA, n), *GAP_RANGE_S)
    gaps[is_first] = 0.0
    total = np.bincount(owner, weights=gaps, minlength=len(lengths))
    scale = np.minimum(1.0, 0.95 * window / np.maximum(total, 1.0))
    steps = np.where(is_first, 0, np.maximum(1, np.round(gaps * scale[owner]))).astype(np.int64)
    cum = np.cumsum(steps)
    offset = cum - cum[starts[owner]]
    span = np.zeros(len(lengths), dtype=np.int64)
    np.maximum.at(span, owner, offset)
    end_s = (end - EPOCH).days * 86_400 + 86_399
    slack = np.maximum(window - 1 - span, 0)
    first = end_s - span - np.floor(rng.random(len(lengths)) * slack).astype(np.int64)
    return (first[owner] + offset) * 1_000_000


def write_raw(lake_root: Path, data: Dataset, dry_run: bool = False) -> dict:
    """Write `data` as raw event and item partitions; return a summary of what was written
    (with `dry_run`, of what would be: nothing is written)."""
    lake = Lake(Path(lake_root))
    events = data.events.select(list(S.EVENTS_SCHEMA.names)).cast(S.EVENTS_SCHEMA)
    if events.num_rows == 0:
        raise InputError(f"{data.notes.get('source', 'dataset')}: no events to import")
    # Arrow's sort is stable: ties keep the dataset's order, so sequences are deterministic.
    events = events.sort_by([(S.TS, "ascending"), (S.USER_ID, "ascending")])
    ts = events.column(S.TS).cast(pa.int64()).to_numpy()
    day = ts // DAY_US
    first_day, last_day = int(day[0]), int(day[-1])
    items = _catalogue(data.items, events, day, first_day)

    event_days = np.unique(day)
    bounds = np.searchsorted(day, np.append(event_days, event_days[-1] + 1))
    for k, d in enumerate([] if dry_run else event_days):
        part = events.slice(bounds[k], bounds[k + 1] - bounds[k])
        write_partition(lake.events_partition(EPOCH + dt.timedelta(days=int(d))), part)

    item_day = items.column(S.CREATED_AT).cast(pa.int64()).to_numpy() // DAY_US
    order = np.argsort(item_day, kind="stable")
    items, item_day = items.take(pa.array(order)), item_day[order]
    item_days = np.unique(item_day)
    bounds = np.searchsorted(item_day, np.append(item_days, item_days[-1] + 1))
    for k, d in enumerate([] if dry_run else item_days):
        part = items.slice(bounds[k], bounds[k + 1] - bounds[k])
        write_partition(lake.items_partition(EPOCH + dt.timedelta(days=int(d))), part)

    counts = pc.value_counts(events.column(S.EVENT_TYPE)).to_pylist()
    return {
        "events": events.num_rows,
        "users": pc.count_distinct(events.column(S.USER_ID)).as_py(),
        "items": items.num_rows,
        "items_with_events": pc.count_distinct(events.column(S.ITEM_ID)).as_py(),
        "days": len(event_days),
        "start_date": (EPOCH + dt.timedelta(days=first_day)).isoformat(),
        "end_date": (EPOCH + dt.timedelta(days=last_day)).isoformat(),
        "event_types": {c["values"]: c["counts"] for c in sorted(counts, key=lambda c: -c["counts"])},
        **({} if dry_run else {"events_path": str(lake.raw_events), "items_path": str(lake.raw_items)}),
        **{k: v for k, v in data.notes.items() if k != "source"},
    }


def _catalogue(items: pa.Table, events: pa.Table, day: np.ndarray, first_day: int) -> pa.Table:
    """Items (one row per id, first kept) + placeholders for event items without a row, with
    created_at = midnight of the item's first event day (the first day for items without)."""
    items = items.select(list(ITEM_COLUMNS))
    ids = items.column(S.ITEM_ID)
    if pc.count_distinct(ids).as_py() != items.num_rows:
        _, first = np.unique(ids.to_numpy(zero_copy_only=False).astype(str), return_index=True)
        items = items.take(pa.array(np.sort(first)))
    # First event per item: events are sorted by ts, so the first occurrence is the earliest.
    ev_items = events.column(S.ITEM_ID).to_numpy(zero_copy_only=False).astype(str)
    seen, first_idx = np.unique(ev_items, return_index=True)
    known = set(items.column(S.ITEM_ID).to_pylist())
    missing = [i for i in seen.tolist() if i not in known]
    if missing:
        items = pa.concat_tables([items, items_table(missing, [S.PLACEHOLDER_TITLE.format(i) for i in missing])])
    first_event_day = dict(zip(seen.tolist(), day[first_idx].tolist()))
    ids = items.column(S.ITEM_ID).to_pylist()
    created_day = np.array([first_event_day.get(i, first_day) for i in ids], dtype=np.int64)
    created = pa.array(created_day * DAY_US, TS_TYPE)
    table = items.append_column(pa.field(S.CREATED_AT, TS_TYPE), created)
    return table.select(list(S.ITEMS_SCHEMA.names)).cast(S.ITEMS_SCHEMA)
