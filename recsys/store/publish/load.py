"""Loading one kind of list into its side table: read the Parquet in chunks cut at whole keys,
check and encode each chunk, COPY FREEZE it, then build the primary key ATTACH will adopt."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from psycopg.copy import QueuedLibpqWriter

from recsys.errors import InputError
from recsys.store.db import one_line
from recsys.store.publish.encode import COPY_SIGNATURE, COPY_TRAILER, check_lists, encode_lists
from recsys.schema import RANK
from recsys.store.publish.lists import BatchValidationError, ListSpec, row_text, side_table

log = logging.getLogger(__name__)

# Rows per chunk read from Parquet: big enough to amortise the Arrow calls (and the hash set of
# known items built per call), small enough that encoding overlaps with the server's COPY.
CHUNK_ROWS = 262_144
# A row of ~K=50 items with reasons is ~2.5 kB, above the default 2 kB TOAST threshold: keep
# lists up to a page inline and uncompressed (compression would cost more CPU than it saves).
TOAST_TUPLE_TARGET = 8160

# Called as on_phase(phase, batch_id); see publish_batch.
PhaseHook = Callable[[str, int], None]


def open_dataset(path: Path, label: str, schema: pa.Schema):
    """The Parquet file or folder at `path`; InputError if unreadable, BatchValidationError if it
    lacks a required column of `schema`."""
    import pyarrow.dataset as ds

    path = Path(path)
    if not path.exists():
        raise InputError(f"{label} {path}: no such file or folder")
    try:
        dataset = ds.dataset(path, format="parquet")
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{label} {path}: not readable as Parquet ({one_line(err)})") from None
    required = [f.name for f in schema if not f.nullable]
    missing = [c for c in required if c not in dataset.schema.names]
    if missing:
        raise BatchValidationError(
            "columns", f"{path} lacks {', '.join(missing)} (has {', '.join(dataset.schema.names)})"
        )
    return dataset


def normalise(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` cast to `schema` (optional columns all null when absent); nulls in required columns raise."""
    arrays = []
    for f in schema:
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
            raise BatchValidationError(f"{f.name} not null", row_text(batch, first))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _batches(dataset, spec: ListSpec) -> Iterator[pa.RecordBatch]:
    columns = [c for c in spec.schema.names if c in dataset.schema.names]
    for batch in dataset.to_batches(columns=columns, batch_size=CHUNK_ROWS):
        if batch.num_rows:
            yield normalise(batch, spec.schema)


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


@dataclass
class Loaded:
    spec: ListSpec
    lists: int = 0  # keys (users or items)
    rows: int = 0  # (key, rank) rows
    copy_s: float = 0.0
    index_s: float = 0.0
    sorted_in_memory: bool = False


def _copy_chunks(conn, batch_id: int, spec: ListSpec, chunks: Iterable[pa.RecordBatch], k: int,
                 known: pa.Array | None, loaded: Loaded, on_phase: PhaseHook) -> None:
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
            copy.write(COPY_SIGNATURE)
            for chunk in _whole_keys(chunks, spec):
                n = chunk.num_rows
                keys = chunk.column(spec.key)
                change = pc.not_equal(keys.slice(1), keys.slice(0, n - 1)).to_numpy(zero_copy_only=False)
                starts = np.flatnonzero(np.concatenate(([True], change)))
                check_lists(chunk, spec, k, starts, np.diff(np.append(starts, n)), known)
                copy.write(encode_lists(chunk, batch_id, spec, starts))
                loaded.lists += len(starts)
                loaded.rows += n
                on_phase("copy", batch_id)
            copy.write(COPY_TRAILER)
        t1 = time.perf_counter()
        # The index matching the parent's primary key, so ATTACH adopts it instead of building one.
        # Keys arrive sorted and unique (checked above), so this is one cheap sorted build.
        conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name}_pkey PRIMARY KEY (batch_id, {spec.key})")
        # Same owner as the parent, so any member of recsys_writer can later detach and drop it.
        conn.execute(f"ALTER TABLE {table} OWNER TO recsys_writer")
        loaded.copy_s, loaded.index_s = t1 - t0, time.perf_counter() - t1


def load_lists(conn, batch_id: int, spec: ListSpec, path: Path, k: int, known: pa.Array | None,
               on_phase: PhaseHook) -> Loaded:
    """The lists in `path` loaded into the batch's side table of `spec`; what was sent, for `verify`."""
    dataset = open_dataset(path, spec.label, spec.schema)
    loaded = Loaded(spec)
    try:
        _copy_chunks(conn, batch_id, spec, _batches(dataset, spec), k, known, loaded, on_phase)
    except _Unsorted:
        # Not in (key, rank) order (the scorer's files always are): sort in memory, load again.
        log.warning("%s %s are not sorted by (%s, rank); sorting them in memory", spec.label, path, spec.key)
        table = pa.Table.from_batches(list(_batches(dataset, spec)), schema=spec.schema)
        table = table.sort_by([(spec.key, "ascending"), (RANK, "ascending")])
        loaded = Loaded(spec, sorted_in_memory=True)
        _copy_chunks(conn, batch_id, spec, table.to_batches(max_chunksize=CHUNK_ROWS), k, known, loaded, on_phase)
    # No ANALYZE here: lookups go through the primary key, whose uniqueness the planner knows
    # without statistics (and the index build set the row estimate); autovacuum analyzes later.
    return loaded
