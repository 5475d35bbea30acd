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
   new complete batch, never a mix and never nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import errors as pg_errors
from psycopg.copy import QueuedLibpqWriter
from psycopg.types.json import Jsonb

from recsys.errors import DatabaseError, InputError, RecsysError
from recsys.store.db import connect, one_line

log = logging.getLogger(__name__)

# Columns of the recommendations Parquet (one row per user and rank).
USER_ID = "user_id"
RANK = "rank"
ITEM_ID = "item_id"
SCORE = "score"
REASON = "reason"
# ... and of the similar-items Parquet (one row per item and rank).
SIMILAR_ITEM_ID = "similar_item_id"

RECS_SCHEMA = pa.schema(
    [
        pa.field(USER_ID, pa.string(), nullable=False),
        pa.field(RANK, pa.int16(), nullable=False),
        pa.field(ITEM_ID, pa.string(), nullable=False),
        pa.field(SCORE, pa.float32(), nullable=False),
        pa.field(REASON, pa.string(), nullable=True),
    ]
)
SIMILAR_SCHEMA = pa.schema(
    [
        pa.field(ITEM_ID, pa.string(), nullable=False),
        pa.field(RANK, pa.int16(), nullable=False),
        pa.field(SIMILAR_ITEM_ID, pa.string(), nullable=False),
        pa.field(SCORE, pa.float32(), nullable=False),
    ]
)
REQUIRED_COLUMNS = tuple(f.name for f in RECS_SCHEMA if not f.nullable)

# Rows per chunk read from Parquet: big enough to amortise the Arrow calls (and the hash set of
# known items built per call), small enough that encoding overlaps with the server's COPY.
CHUNK_ROWS = 262_144
# A row of ~K=50 items with reasons is ~2.5 kB, above the default 2 kB TOAST threshold: keep
# lists up to a page inline and uncompressed (compression would cost more CPU than it saves).
TOAST_TUPLE_TARGET = 8160
# The switch waits at most this long for a lock, then retries: a queued ACCESS EXCLUSIVE
# request would stall every new reader behind it, so waits are kept short.
SWITCH_LOCK_TIMEOUT_MS = 2_000
SWITCH_ATTEMPTS = 5
# Hard cap on any statement of the switch; it only touches catalog rows and a few batches rows.
SWITCH_STATEMENT_TIMEOUT_MS = 30_000
# First key of the publisher's pg_advisory_lock(int, int); the second is the date's ordinal, so
# publishers of one ds exclude each other while different dates only meet at the switch.
PUBLISH_LOCK_NAMESPACE = 730_115
# A publisher that finds its date's lock taken retries this long before giving up: long enough
# for a finished publisher's session to end, far shorter than any real load.
CLAIM_GRACE_S = 2.0

# Test seam: when set, called as PHASE_HOOK(phase, batch_id) at "loading", after every "copy"
# chunk, and at "validating" and "switching". None in normal runs; tests use it to stop a
# publisher at a known point and kill it.
PHASE_HOOK: Callable[[str, int], None] | None = None

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
# Text lists are stored as one text, their elements joined by the ASCII unit separator.
SEPARATOR = "\x1f"
_FLOAT4_OID = 700
# Fixed-width parts of one binary COPY tuple, big-endian: [nfields, len 8, batch_id, len key] key,
# then per list column either [len] joined-text, or [len, ndim, flags, oid, dim, lbound] float4 elements
_HEAD = np.dtype([("nfields", ">i2"), ("len_batch", ">i4"), ("batch_id", ">i8"), ("len_key", ">i4")])
_ARRAY = np.dtype(
    [("len", ">i4"), ("ndim", ">i4"), ("flags", ">i4"), ("oid", ">i4"), ("dim", ">i4"), ("lbound", ">i4")]
)
_ARRAY_HEADER_BYTES = _ARRAY.itemsize - 4  # the array's own header, after its length word


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


@dataclass
class PublishResult:
    batch_id: int
    rows: int
    users: int
    seconds: float
    replaced_batch_ids: list[int] = field(default_factory=list)
    similar_rows: int = 0
    similar_items: int = 0


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


def side_table(batch_id: int, spec: ListSpec = RECOMMENDATIONS) -> str:
    """Unqualified name of a batch's partition of `spec` (a side table until attached)."""
    return f"{spec.parent}_b{int(batch_id)}"


def _phase(name: str, batch_id: int) -> None:
    if PHASE_HOOK is not None:
        PHASE_HOOK(name, batch_id)


# --------------------------------------------------------------------------- input


def _dataset(path: Path, spec: ListSpec):
    import pyarrow.dataset as ds

    path = Path(path)
    if not path.exists():
        raise InputError(f"{spec.label} {path}: no such file or folder")
    try:
        dataset = ds.dataset(path, format="parquet")
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{spec.label} {path}: not readable as Parquet ({one_line(err)})") from None
    required = [f.name for f in spec.schema if not f.nullable]
    missing = [c for c in required if c not in dataset.schema.names]
    if missing:
        raise BatchValidationError(
            "columns", f"{path} lacks {', '.join(missing)} (has {', '.join(dataset.schema.names)})"
        )
    return dataset


def _row_text(batch: pa.RecordBatch, i: int) -> str:
    row = batch.slice(int(i), 1).to_pylist()[0]
    return ", ".join(f"{k}={v!r}" for k, v in row.items())


def _normalise(batch: pa.RecordBatch, spec: ListSpec) -> pa.RecordBatch:
    """`batch` cast to the spec's schema (optional columns all null when absent); nulls in required columns raise."""
    arrays = []
    for f in spec.schema:
        if f.name not in batch.schema.names:
            arrays.append(pa.nulls(batch.num_rows, f.type))
            continue
        col = batch.column(f.name)
        try:
            arrays.append(col.cast(f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            check = "rank in 1..k" if f.name == RANK else f"{f.name} is {f.type}"
            raise BatchValidationError(check, f"column {f.name} ({col.type}): {one_line(err)}") from None
        if not f.nullable and col.null_count:
            first = pc.index(pc.is_null(col), True).as_py()
            raise BatchValidationError(f"{f.name} not null", _row_text(batch, first))
    return pa.RecordBatch.from_arrays(arrays, schema=spec.schema)


def _batches(dataset, spec: ListSpec) -> Iterator[pa.RecordBatch]:
    columns = [c for c in spec.schema.names if c in dataset.schema.names]
    for batch in dataset.to_batches(columns=columns, batch_size=CHUNK_ROWS):
        if batch.num_rows:
            yield _normalise(batch, spec)


class _Unsorted(Exception):
    """The input is not in (key, rank) order; the caller sorts it in memory and starts again."""


def _whole_keys(batches: Iterable[pa.RecordBatch], spec: ListSpec) -> Iterator[pa.RecordBatch]:
    """The rows again, re-cut so that no key's list spans two chunks.

    Requires (key, rank) ascending, as the scorer writes it; raises _Unsorted otherwise, and
    BatchValidationError for a repeated (key, rank), which sorts next to its twin.
    """
    carry: pa.RecordBatch | None = None
    for batch in batches:
        if carry is not None:
            batch = pa.concat_batches([carry, batch])
        n = batch.num_rows
        if n == 0:
            continue
        cut = 0  # start of the last key's rows
        if n > 1:
            keys, ranks = batch.column(spec.key), batch.column(RANK).to_numpy()
            before, after = keys.slice(0, n - 1), keys.slice(1)
            if pc.any(pc.greater(before, after)).as_py():
                raise _Unsorted
            same = pc.equal(before, after).to_numpy(zero_copy_only=False)
            if np.any(same & (ranks[:-1] > ranks[1:])):
                raise _Unsorted
            dup = np.flatnonzero(same & (ranks[:-1] == ranks[1:]))
            if len(dup):
                i = int(dup[0])
                raise BatchValidationError(
                    f"unique ({spec.key}, rank)",
                    f"({spec.key}, rank)=({keys[i].as_py()!r}, {int(ranks[i])}) appears more than once",
                )
            changes = np.flatnonzero(~same)
            cut = int(changes[-1]) + 1 if len(changes) else 0
        if cut:
            yield batch.slice(0, cut)
        carry = batch.slice(cut)
    if carry is not None and carry.num_rows:
        yield carry


# --------------------------------------------------------------------------- checks and binary COPY


def _fixed(parts: np.ndarray) -> pa.Array:
    """A numpy structured array as an Arrow binary array of its records (one value per row)."""
    width = parts.dtype.itemsize
    raw = pa.py_buffer(parts.view(np.uint8))
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(parts), [None, raw]).cast(pa.binary())


def _offsets(arr: pa.Array) -> np.ndarray:
    return np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)


def _joined(col: pa.Array, bounds: np.ndarray) -> pa.Array:
    """Each list's strings joined by SEPARATOR (null strings as empty ones): one binary per list."""
    values = pc.fill_null(col, "").cast(pa.binary())
    lists = pa.ListArray.from_arrays(pa.array(bounds.astype(np.int32)), values)
    return pc.binary_join(lists, SEPARATOR.encode())


def _float_arrays(col: pa.Array, bounds: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """Each list's floats as a binary COPY float4[] (array header, binary), one per list."""
    elements = np.empty(len(col), [("len", ">i4"), ("value", ">f4")])
    elements["len"] = 4
    elements["value"] = col.to_numpy(zero_copy_only=False)
    lists = len(bounds) - 1
    cuts = (bounds * 8).astype(np.int32)
    data = pa.py_buffer(elements.view(np.uint8))
    payload = pa.BinaryArray.from_buffers(pa.binary(), lists, [None, pa.py_buffer(cuts), data])
    header = np.empty(lists, _ARRAY)
    header["len"] = _ARRAY_HEADER_BYTES + np.diff(cuts)
    header["ndim"] = 1
    header["flags"] = 0
    header["oid"] = _FLOAT4_OID
    header["dim"] = np.diff(bounds)
    header["lbound"] = 1
    return _fixed(header), payload


def _any_byte(col: pa.Array, byte: int) -> bool:
    """Whether `byte` occurs in the string data of `col` (null slots hold no data)."""
    data = col.buffers()[2]
    if data is None or col.null_count == len(col):
        return False
    offsets = _offsets(col)
    return bool((np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]] == byte).any())


def _check(chunk: pa.RecordBatch, spec: ListSpec, k: int, starts: np.ndarray, counts: np.ndarray,
           known: pa.Array | None) -> None:
    """The row-level checks of one chunk of whole lists; raises BatchValidationError naming a row."""
    n = chunk.num_rows
    ranks = chunk.column(RANK).to_numpy()
    bad = np.flatnonzero((ranks < 1) | (ranks > k))
    if len(bad):
        raise BatchValidationError(f"rank in 1..{k}", _row_text(chunk, bad[0]))
    position = np.arange(1, n + 1) - np.repeat(starts, counts)
    bad = np.flatnonzero(ranks != position)
    if len(bad):
        g = int(np.searchsorted(starts, bad[0], side="right") - 1)
        lo = int(starts[g])
        key = chunk.column(spec.key)[lo].as_py()
        raise BatchValidationError(
            f"ranks run 1..n per {spec.key_label}",
            f"{spec.key}={key!r} has ranks {ranks[lo:lo + int(counts[g])][:20].tolist()}",
        )
    scores = chunk.column(SCORE).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise BatchValidationError("score is finite", _row_text(chunk, bad[0]))
    for column, _ in spec.arrays:
        col = chunk.column(column)
        # One byte scan of the column's data buffer; only a hit pays for the per-string search.
        if col.type == pa.string() and _any_byte(col, ord(SEPARATOR)):
            hit = pc.match_substring(col, SEPARATOR)
            if pc.any(hit).as_py():
                raise BatchValidationError(
                    f"{column} has no U+001F (unit separator)", _row_text(chunk, pc.index(hit, True).as_py())
                )
    items = chunk.column(spec.item)
    empty = np.flatnonzero(np.diff(_offsets(items)) == 0)
    if len(empty):
        raise BatchValidationError(f"{spec.item} is not empty", _row_text(chunk, empty[0]))
    if known is not None:
        for column in spec.known:
            # One hash probe per row, and the catalogue index doubles as the item code below.
            where = pc.index_in(chunk.column(column), value_set=known)
            if where.null_count:
                first = pc.index(pc.is_null(where), True).as_py()
                raise BatchValidationError(f"{column} is a known item", _row_text(chunk, first))
            if column == spec.item:
                codes = where.to_numpy().astype(np.int64)
    else:
        codes = pc.dictionary_encode(items).indices.to_numpy().astype(np.int64)
    # Lists are whole and in key order, so (list number, item code) pairs are nearly sorted already.
    pairs = np.repeat(np.arange(len(starts), dtype=np.int64), counts) * (int(codes.max()) + 1) + codes
    ordered = np.sort(pairs)
    twins = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(twins):
        twin = int(np.flatnonzero(pairs == ordered[twins[0]])[1])
        copies = int(np.count_nonzero(pairs == pairs[twin]))
        raise BatchValidationError(
            f"unique ({spec.key}, {spec.item})",
            f"{spec.key}={chunk.column(spec.key)[twin].as_py()!r}, {spec.item}={items[twin].as_py()!r}, "
            f"copies={copies}",
        )
    if spec is SIMILAR_ITEMS:
        bad = np.flatnonzero(pc.equal(items, chunk.column(spec.key)).to_numpy(zero_copy_only=False))
        if len(bad):
            raise BatchValidationError(f"{spec.item} is not the item itself", _row_text(chunk, bad[0]))


def encode_lists(chunk: pa.RecordBatch, batch_id: int, spec: ListSpec = RECOMMENDATIONS,
                 starts: np.ndarray | None = None) -> memoryview:
    """Whole lists of a (key, rank)-sorted chunk as binary COPY tuples, one per key (no header/trailer).

    Vectorised: the fixed-width parts are filled column-wise in numpy, Arrow joins each list's
    strings in C++, the float arrays are slices of one big-endian buffer (no copy), and
    `binary_join_element_wise` interleaves the parts into tuples; no Python per row or per list.
    """
    n = chunk.num_rows
    keys = chunk.column(spec.key)
    if starts is None:
        change = pc.not_equal(keys.slice(1), keys.slice(0, n - 1)).to_numpy(zero_copy_only=False) if n > 1 else []
        starts = np.flatnonzero(np.concatenate(([True], change))) if n else np.zeros(0, np.int64)
    bounds = np.append(starts, n)
    lists = len(starts)
    key_bytes = keys.take(pa.array(starts)).cast(pa.binary())

    head = np.empty(lists, _HEAD)
    head["nfields"] = 2 + len(spec.arrays)
    head["len_batch"] = 8
    head["batch_id"] = batch_id
    head["len_key"] = pc.binary_length(key_bytes).to_numpy(zero_copy_only=False)
    parts = [_fixed(head), key_bytes]
    for column, _ in spec.arrays:
        col = chunk.column(column)
        if col.type == pa.float32():
            parts += _float_arrays(col, bounds)
            continue
        length = np.empty(lists, ">i4")
        if col.null_count == n:  # no reasons at all: store NULL, not a string of separators
            length[:] = -1
            parts += [_fixed(length), pa.nulls(lists, pa.binary()).fill_null(b"")]
            continue
        joined = _joined(col, bounds)
        length[:] = pc.binary_length(joined).to_numpy(zero_copy_only=False)
        parts += [_fixed(length), joined]
    tuples = pc.binary_join_element_wise(*parts, b"")
    offsets = _offsets(tuples)
    if offsets[-1] >= 2**31 - 1:
        raise DatabaseError(f"a chunk of {spec.label} encodes to over 2 GiB; lower CHUNK_ROWS")
    return memoryview(tuples.buffers()[2])[offsets[0] : offsets[-1]]


# --------------------------------------------------------------------------- load


@dataclass
class _Loaded:
    spec: ListSpec
    lists: int = 0  # keys (users or items)
    rows: int = 0  # (key, rank) rows
    copy_s: float = 0.0
    index_s: float = 0.0
    sorted_in_memory: bool = False


def _copy_chunks(conn, batch_id: int, spec: ListSpec, chunks: Iterable[pa.RecordBatch], k: int,
                 known: pa.Array | None, loaded: _Loaded) -> None:
    """Create the side table, COPY every list into it, build its primary key (one transaction)."""
    name = side_table(batch_id, spec)
    table = f"recsys.{name}"
    cols = ", ".join(["batch_id", spec.key] + [c for _, c in spec.arrays])
    with conn.transaction():
        # Not waiting for this commit's WAL flush is safe: nothing serves the table until the
        # switch, whose synchronous commit flushes all WAL before it, this load included. After a
        # crash in between, the batch is abandoned and cleaned up like a killed publisher's.
        conn.execute("SET LOCAL synchronous_commit = off")
        conn.execute(
            f"CREATE TABLE {table} (LIKE recsys.{spec.parent} INCLUDING DEFAULTS, "
            f"CONSTRAINT {name}_batch_id_check CHECK (batch_id = {int(batch_id)})) "
            f"WITH (toast_tuple_target = {TOAST_TUPLE_TARGET})"
        )
        # Apps look lists up by key only: element statistics of the arrays would cost autovacuum's
        # ANALYZE far more than they could ever help a plan.
        conn.execute(
            f"ALTER TABLE {table} " + ", ".join(f"ALTER COLUMN {c} SET STATISTICS 0" for _, c in spec.arrays)
        )
        # FREEZE: the table is new in this transaction, so rows are written already frozen and
        # the first readers don't rewrite every page to set hint bits.
        t0 = time.perf_counter()
        # A queued writer sends from a thread, so checking and encoding the next chunk overlaps
        # with the server ingesting this one.
        copy_sql = f"COPY {table} ({cols}) FROM STDIN (FORMAT BINARY, FREEZE)"
        with conn.cursor() as cur, cur.copy(copy_sql, writer=QueuedLibpqWriter(cur)) as copy:
            copy.write(_COPY_SIGNATURE)
            for chunk in _whole_keys(chunks, spec):
                n = chunk.num_rows
                keys = chunk.column(spec.key)
                change = pc.not_equal(keys.slice(1), keys.slice(0, n - 1)).to_numpy(zero_copy_only=False)
                starts = np.flatnonzero(np.concatenate(([True], change)))
                _check(chunk, spec, k, starts, np.diff(np.append(starts, n)), known)
                copy.write(encode_lists(chunk, batch_id, spec, starts))
                loaded.lists += len(starts)
                loaded.rows += n
                _phase("copy", batch_id)
            copy.write(_COPY_TRAILER)
        t1 = time.perf_counter()
        # The index matching the parent's primary key, so ATTACH adopts it instead of building one.
        # Keys arrive sorted and unique (checked above), so this is one cheap sorted build.
        conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name}_pkey PRIMARY KEY (batch_id, {spec.key})")
        # Same owner as the parent, so any member of recsys_writer can later detach and drop it.
        conn.execute(f"ALTER TABLE {table} OWNER TO recsys_writer")
        loaded.copy_s, loaded.index_s = t1 - t0, time.perf_counter() - t1


def _load(conn, batch_id: int, spec: ListSpec, path: Path, k: int, known: pa.Array | None) -> _Loaded:
    dataset = _dataset(path, spec)
    loaded = _Loaded(spec)
    try:
        _copy_chunks(conn, batch_id, spec, _batches(dataset, spec), k, known, loaded)
    except _Unsorted:
        # Not in (key, rank) order (the scorer's files always are): sort in memory, load again.
        log.warning("%s %s are not sorted by (%s, rank); sorting them in memory", spec.label, path, spec.key)
        table = pa.Table.from_batches(list(_batches(dataset, spec)), schema=spec.schema)
        table = table.sort_by([(spec.key, "ascending"), (RANK, "ascending")])
        loaded = _Loaded(spec, sorted_in_memory=True)
        _copy_chunks(conn, batch_id, spec, table.to_batches(max_chunksize=CHUNK_ROWS), k, known, loaded)
    # No ANALYZE here: lookups go through the primary key, whose uniqueness the planner knows
    # without statistics (and the index build set the row estimate); autovacuum analyzes later.
    return loaded


# --------------------------------------------------------------------------- validation


def _verify(conn, batch_id: int, loaded: _Loaded) -> None:
    """What landed in the side table is exactly what was sent: lists, and elements in every array."""
    spec = loaded.spec
    lists, items = conn.execute(
        f"SELECT count(*), coalesce(sum(cardinality(scores)), 0) FROM recsys.{side_table(batch_id, spec)}"
    ).fetchone()
    if (lists, items) != (loaded.lists, loaded.rows):
        raise BatchValidationError(
            f"loaded {spec.label} match the file",
            f"the table holds {lists} lists of {items} items; {loaded.lists} lists of {loaded.rows} items were sent",
        )


def _check_counts(recs: _Loaded, expected_users: int | None, expected_rows: int | None) -> None:
    if recs.rows == 0:
        raise BatchValidationError("at least one row", "the recommendations file has no rows")
    if expected_users is not None and recs.lists != expected_users:
        raise BatchValidationError("user count", f"{recs.lists} distinct users, expected {expected_users}")
    if expected_rows is not None and recs.rows != expected_rows:
        raise BatchValidationError(
            "row count", f"{recs.rows} rows, expected {expected_rows} (users x k within the exclusions)"
        )


# --------------------------------------------------------------------------- switch


def _switch(conn, batch_id: int, ds: date, loaded: list[_Loaded], summary: dict) -> list[int]:
    """Attach the side tables and publish the batch in one transaction; return the replaced ids."""
    recs = loaded[0]
    for attempt in range(1, SWITCH_ATTEMPTS + 1):
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{SWITCH_LOCK_TIMEOUT_MS}ms'")
                conn.execute(f"SET LOCAL statement_timeout = '{SWITCH_STATEMENT_TIMEOUT_MS}ms'")
                # ATTACH alone takes SHARE UPDATE EXCLUSIVE on the parent, which lets a reader plan
                # without the new partition and then, with a later snapshot, see the new batch as
                # current: an empty result. Blocking readers for these few milliseconds rules it out.
                for part in loaded:  # SPECS order, as retention locks them
                    conn.execute(f"LOCK TABLE recsys.{part.spec.parent} IN ACCESS EXCLUSIVE MODE")
                for part in loaded:
                    conn.execute(
                        f"ALTER TABLE recsys.{part.spec.parent} ATTACH PARTITION "
                        f"recsys.{side_table(batch_id, part.spec)} FOR VALUES IN ({int(batch_id)})"
                    )
                # Old batch first: the unique index allows one 'published' batch per ds.
                replaced = [
                    r
                    for (r,) in conn.execute(
                        "UPDATE recsys.batches SET status = 'replaced' "
                        "WHERE ds = %s AND status = 'published' AND batch_id <> %s RETURNING batch_id",
                        (ds, batch_id),
                    )
                ]
                done = conn.execute(
                    "UPDATE recsys.batches SET status = 'published', published_at = now(), finished_at = now(), "
                    "row_count = %s, user_count = %s, summary = %s "
                    "WHERE batch_id = %s AND status = 'validating'",
                    (recs.rows, recs.lists, Jsonb(summary), batch_id),
                ).rowcount
                if done != 1:
                    raise DatabaseError(f"batch {batch_id} is no longer 'validating' (marked by another process)")
            return sorted(replaced)
        except (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected) as err:
            if attempt == SWITCH_ATTEMPTS:
                raise DatabaseError(
                    f"switching in batch {batch_id}: lock not granted after {SWITCH_ATTEMPTS} tries "
                    f"({one_line(err)}); long-running readers hold recsys.{recs.spec.parent}"
                ) from None
            log.warning("switch of batch %s waited too long for a lock (try %s); retrying", batch_id, attempt)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def drop_side_tables(conn, batch_id: int) -> None:
    """Drop a batch's unattached side tables (inside the caller's transaction)."""
    for spec in SPECS:
        conn.execute(f"DROP TABLE IF EXISTS recsys.{side_table(batch_id, spec)}")


def _mark_failed(url: str, conn, batch_id: int, error: str) -> None:
    """Record the failure and drop the side tables; best effort, on a fresh connection if needed."""
    own = None
    try:
        if conn.closed or conn.broken:
            own = conn = connect(url, autocommit=True)
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{SWITCH_LOCK_TIMEOUT_MS}ms'")
            drop_side_tables(conn, batch_id)
            conn.execute(
                "UPDATE recsys.batches SET status = 'failed', error = %s, finished_at = now() "
                "WHERE batch_id = %s AND status IN ('loading', 'validating')",
                (error, batch_id),
            )
    except Exception as err:  # the original error matters more; retention cleans up later
        log.error("could not mark batch %s failed: %s", batch_id, one_line(err))
    finally:
        if own is not None:
            own.close()


# --------------------------------------------------------------------------- publish


def _claim_date(conn, ds: date, model_version: str, k: int, run_id: str | None) -> int:
    """Take the date's publisher lock and register the batch; PublishConflictError if it is taken."""
    deadline = time.monotonic() + CLAIM_GRACE_S
    while not (got := conn.execute("SELECT pg_try_advisory_lock(%s, %s)", _lock_key(ds)).fetchone()[0]):
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if got:
        return conn.execute(
            "INSERT INTO recsys.batches (ds, model_version, status, k, run_id) "
            "VALUES (%s, %s, 'loading', %s, %s) RETURNING batch_id",
            (ds, model_version, k, run_id),
        ).fetchone()[0]
    other = conn.execute(
        "SELECT batch_id, status, started_at FROM recsys.batches "
        "WHERE ds = %s AND status IN ('loading', 'validating') ORDER BY batch_id DESC LIMIT 1",
        (ds,),
    ).fetchone()
    holder = f" (batch {other[0]}, {other[1]} since {other[2]:%Y-%m-%d %H:%M:%S %Z})" if other else ""
    message = (
        f"another publisher is already publishing {ds}{holder}; "
        "this run stopped without changing anything (the other one's batch will serve)"
    )
    batch_id = conn.execute(
        "INSERT INTO recsys.batches (ds, model_version, status, k, run_id, error, finished_at) "
        "VALUES (%s, %s, 'failed', %s, %s, %s, now()) RETURNING batch_id",
        (ds, model_version, k, run_id, message),
    ).fetchone()[0]
    raise PublishConflictError(f"batch {batch_id}: {message}", batch_id)


def _lock_key(ds: date) -> tuple[int, int]:
    return PUBLISH_LOCK_NAMESPACE, ds.toordinal()


def _release_date(conn, ds: date) -> None:
    """Give the date's lock back now (closing the connection would too, but asynchronously)."""
    if not conn.closed and not conn.broken:
        try:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", _lock_key(ds))
        except Exception as err:  # the connection's end releases it anyway
            log.warning("releasing the publish lock of %s: %s", ds, one_line(err))


def _clean_abandoned(conn, ds: date, batch_id: int) -> list[int]:
    """Batches of `ds` still 'loading'/'validating' whose publisher died (we hold the date's lock,
    so none is alive): drop their side tables, mark them 'dropped'."""
    cleaned = []
    for other, status in conn.execute(
        "SELECT batch_id, status FROM recsys.batches "
        "WHERE ds = %s AND status IN ('loading', 'validating') AND batch_id <> %s ORDER BY batch_id",
        (ds, batch_id),
    ).fetchall():
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{SWITCH_LOCK_TIMEOUT_MS}ms'")
            drop_side_tables(conn, other)
            conn.execute(
                "UPDATE recsys.batches SET status = 'dropped', finished_at = now(), "
                "error = coalesce(error, %s) WHERE batch_id = %s",
                (f"abandoned while {status} (its publisher stopped); cleaned up by batch {batch_id}", other),
            )
        cleaned.append(other)
    if cleaned:
        log.warning("publishing %s: cleaned up abandoned batches %s", ds, cleaned)
    return cleaned


def _known_array(known_items) -> pa.Array | None:
    if known_items is None:
        return None
    if isinstance(known_items, pa.ChunkedArray):
        known_items = known_items.combine_chunks()
    if isinstance(known_items, pa.Array):
        return known_items.cast(pa.string())
    return pa.array(list(known_items), type=pa.string())


def publish_batch(
    url: str,
    *,
    ds: date,
    model_version: str,
    recs_path: Path,
    k: int,
    run_id: str | None = None,
    expected_users: int | None = None,
    expected_rows: int | None = None,
    known_items: Iterable[str] | pa.Array | None = None,
    similar_path: Path | None = None,
    similar_k: int | None = None,
) -> PublishResult:
    """Load, validate and switch in the lists in `recs_path` (and `similar_path`) as the batch for `ds`.

    Re-publishing a date replaces that date's batch; an older date never displaces a newer one
    in the views. Raises `BatchValidationError` (a `DatabaseError`) for a batch that fails a
    check: the batch is then 'failed' and the current batch is untouched; `PublishConflictError`
    when another publisher of `ds` is running.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    started = time.perf_counter()
    conn = connect(url, autocommit=True)
    try:
        try:
            batch_id = _claim_date(conn, ds, model_version, k, run_id)
        except PublishConflictError:
            raise
        except Exception as err:
            raise DatabaseError(f"registering a batch for {ds}: {one_line(err)}") from None
        try:
            _clean_abandoned(conn, ds, batch_id)
            _phase("loading", batch_id)
            t_load = time.perf_counter()
            known = _known_array(known_items)
            loaded = [_load(conn, batch_id, RECOMMENDATIONS, Path(recs_path), k, known)]
            if similar_path is not None:
                loaded.append(_load(conn, batch_id, SIMILAR_ITEMS, Path(similar_path), similar_k or k, known))
            conn.execute("UPDATE recsys.batches SET status = 'validating' WHERE batch_id = %s", (batch_id,))
            _phase("validating", batch_id)
            t_validate = time.perf_counter()
            for part in loaded:
                _verify(conn, batch_id, part)
            _check_counts(loaded[0], expected_users, expected_rows)
            t_switch = time.perf_counter()
            recs = loaded[0]
            summary = {
                "source": str(recs_path),
                "sorted_in_memory": recs.sorted_in_memory,
                # seconds: before the load (lock, registration, cleanup), the COPY (Parquet read,
                # checks, encoding, ingest), the primary key, the whole load with commits, the
                # SQL validation; the switch takes the rest of `seconds` in batch_history.
                "prepare_seconds": round(t_load - started, 3),
                "copy_seconds": round(recs.copy_s, 3),
                "copy_rows_per_second": round(recs.rows / recs.copy_s) if recs.copy_s > 0 else None,
                "index_seconds": round(recs.index_s, 3),
                "load_seconds": round(t_validate - t_load, 3),
                "validate_seconds": round(t_switch - t_validate, 3),
            }
            if len(loaded) > 1:
                summary.update(
                    similar_source=str(similar_path), similar_items=loaded[1].lists, similar_rows=loaded[1].rows
                )
            _phase("switching", batch_id)
            replaced = _switch(conn, batch_id, ds, loaded, summary)
        except BatchValidationError as err:
            named = BatchValidationError(err.check, err.example, batch_id=batch_id, ds=ds)
            _mark_failed(url, conn, batch_id, str(named))
            raise named from None
        except RecsysError as err:
            _mark_failed(url, conn, batch_id, one_line(err))
            raise
        except Exception as err:
            message = f"publishing batch {batch_id} for {ds}: {one_line(err)}"
            _mark_failed(url, conn, batch_id, message)
            raise DatabaseError(message) from err
    finally:
        _release_date(conn, ds)
        conn.close()
    seconds = time.perf_counter() - started
    similar = loaded[1] if len(loaded) > 1 else _Loaded(SIMILAR_ITEMS)
    log.info(
        "published batch %s for %s: %s rows, %s users (+%s similar-item rows) in %.2fs; replaced %s",
        batch_id, ds, recs.rows, recs.lists, similar.rows, seconds, replaced,
    )
    return PublishResult(batch_id, recs.rows, recs.lists, seconds, replaced, similar.rows, similar.lists)
