"""Publish one night's recommendations: load off to the side, validate, switch in atomically.

1. a `batches` row (status 'loading') is committed first, so even a failed load is visible;
2. the Parquet rows go into a side table `recsys.recommendations_b<batch_id>` by binary COPY
   (created in the same transaction, so COPY FREEZE applies), then its primary key is built;
3. status 'validating': SQL checks on the side table; a failure marks the batch 'failed' with
   the check and an example row, drops the side table and leaves the current batch alone;
4. one short transaction attaches the side table as a partition, publishes the batch and marks
   the date's previous batch 'replaced'. Readers of `current_recommendations` see the old
   complete batch or the new complete batch, never a mix and never nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import errors as pg_errors
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
REQUIRED_COLUMNS = (USER_ID, RANK, ITEM_ID, SCORE)
# Arrow types matching the table's columns (text, smallint, text, real, text).
RECS_SCHEMA = pa.schema(
    [
        pa.field(USER_ID, pa.string(), nullable=False),
        pa.field(RANK, pa.int16(), nullable=False),
        pa.field(ITEM_ID, pa.string(), nullable=False),
        pa.field(SCORE, pa.float32(), nullable=False),
        pa.field(REASON, pa.string(), nullable=True),
    ]
)
COPY_COLUMNS = ("batch_id", USER_ID, RANK, ITEM_ID, SCORE, REASON)

# Rows per COPY chunk: large enough to amortise the Arrow calls, small enough to stream.
CHUNK_ROWS = 65_536
# Per-session memory for the validation GROUP BYs and the index sort; a 1M-row batch fits.
VALIDATE_WORK_MEM = "256MB"
INDEX_MAINTENANCE_WORK_MEM = "256MB"
# The switch waits at most this long for a lock, then retries: a queued ACCESS EXCLUSIVE
# request would stall every new reader behind it, so waits are kept short.
SWITCH_LOCK_TIMEOUT_MS = 2_000
SWITCH_ATTEMPTS = 5
# Hard cap on any statement of the switch; it only touches catalog rows and one batches row.
SWITCH_STATEMENT_TIMEOUT_MS = 30_000
# First key of pg_advisory_xact_lock(int, int); the second is the date, so publishers of one
# ds serialise while different dates only meet at the partition lock.
PUBLISH_LOCK_NAMESPACE = 730_115

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
# Fixed-width parts of one binary COPY tuple, big-endian; the text fields go between them:
# [nfields, len 8, batch_id, len user] user [len 2, rank, len item] item [len 4, score, len reason] reason
_HEAD = np.dtype([("nfields", ">i2"), ("len_batch", ">i4"), ("batch_id", ">i8"), ("len_user", ">i4")])
_MID = np.dtype([("len_rank", ">i4"), ("rank", ">i2"), ("len_item", ">i4")])
_TAIL = np.dtype([("len_score", ">i4"), ("score", ">f4"), ("len_reason", ">i4")])


@dataclass
class PublishResult:
    batch_id: int
    rows: int
    users: int
    seconds: float
    replaced_batch_ids: list[int] = field(default_factory=list)


class BatchValidationError(DatabaseError):
    """A batch failed a check before it was switched in; `check` names it, `example` shows a row."""

    def __init__(self, check: str, example: str, batch_id: int | None = None, ds: date | None = None):
        self.check = check
        self.example = example
        self.batch_id = batch_id
        where = f"batch {batch_id} " if batch_id is not None else "batch "
        where += f"for {ds} " if ds is not None else ""
        super().__init__(f"{where}failed check '{check}': {example}")


def side_table(batch_id: int) -> str:
    """Unqualified name of a batch's partition (side table until attached)."""
    return f"recommendations_b{int(batch_id)}"


# --------------------------------------------------------------------------- input


def _dataset(recs_path: Path):
    import pyarrow.dataset as ds

    recs_path = Path(recs_path)
    if not recs_path.exists():
        raise InputError(f"recommendations {recs_path}: no such file or folder")
    try:
        dataset = ds.dataset(recs_path, format="parquet")
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"recommendations {recs_path}: not readable as Parquet ({one_line(err)})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.schema.names]
    if missing:
        raise BatchValidationError(
            "columns", f"{recs_path} lacks {', '.join(missing)} (has {', '.join(dataset.schema.names)})"
        )
    return dataset


def _row_text(batch: pa.RecordBatch, i: int) -> str:
    row = batch.slice(i, 1).to_pylist()[0]
    return ", ".join(f"{k}={v!r}" for k, v in row.items())


def _normalise(batch: pa.RecordBatch) -> pa.RecordBatch:
    """`batch` cast to RECS_SCHEMA (reason all null when absent); nulls in required columns raise."""
    arrays = []
    for f in RECS_SCHEMA:
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
    return pa.RecordBatch.from_arrays(arrays, schema=RECS_SCHEMA)


def _batches(dataset) -> Iterator[pa.RecordBatch]:
    columns = [c for c in RECS_SCHEMA.names if c in dataset.schema.names]
    for batch in dataset.to_batches(columns=columns, batch_size=CHUNK_ROWS):
        if batch.num_rows:
            yield _normalise(batch)


# --------------------------------------------------------------------------- binary COPY


def _fixed(parts: np.ndarray) -> pa.Array:
    """A numpy structured array as an Arrow binary array of its records (one value per row)."""
    width = parts.dtype.itemsize
    raw = pa.py_buffer(parts.view(np.uint8))
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(parts), [None, raw]).cast(pa.binary())


def encode_binary_copy(batch: pa.RecordBatch, batch_id: int) -> memoryview:
    """The rows of a RECS_SCHEMA `batch` as PostgreSQL binary COPY tuples (no header/trailer).

    Vectorised: the fixed-width parts are filled column-wise in numpy, and Arrow's C++
    `binary_join_element_wise` interleaves them with the text columns; no Python per row.
    """
    n = batch.num_rows
    user = batch.column(USER_ID).cast(pa.binary())
    item = batch.column(ITEM_ID).cast(pa.binary())
    reason = batch.column(REASON).cast(pa.binary())

    head = np.empty(n, _HEAD)
    head["nfields"] = len(COPY_COLUMNS)
    head["len_batch"] = 8
    head["batch_id"] = batch_id
    head["len_user"] = pc.binary_length(user).to_numpy(zero_copy_only=False)
    mid = np.empty(n, _MID)
    mid["len_rank"] = 2
    mid["rank"] = batch.column(RANK).to_numpy(zero_copy_only=False)
    mid["len_item"] = pc.binary_length(item).to_numpy(zero_copy_only=False)
    tail = np.empty(n, _TAIL)
    tail["len_score"] = 4
    tail["score"] = batch.column(SCORE).to_numpy(zero_copy_only=False)
    tail["len_reason"] = pc.fill_null(pc.binary_length(reason), -1).to_numpy(zero_copy_only=False)  # -1: NULL

    rows = pc.binary_join_element_wise(
        _fixed(head), user, _fixed(mid), item, _fixed(tail), pc.fill_null(reason, b""), b""
    )
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=n + 1, offset=rows.offset * 4)
    return memoryview(rows.buffers()[2])[offsets[0] : offsets[-1]]


def _load(conn, batch_id: int, dataset) -> tuple[int, float, float]:
    """Create the side table, COPY every row into it, build its primary key.

    Returns (rows, seconds of COPY including reading the Parquet, seconds of the index build).
    """
    table = f"recsys.{side_table(batch_id)}"
    rows = 0
    with conn.transaction():
        conn.execute(
            f"CREATE TABLE {table} (LIKE recsys.recommendations INCLUDING DEFAULTS, "
            f"CONSTRAINT {side_table(batch_id)}_batch_id_check CHECK (batch_id = {int(batch_id)}))"
        )
        # FREEZE: the table is new in this transaction, so rows are written already frozen and
        # the first readers don't rewrite every page to set hint bits.
        copy_sql = f"COPY {table} ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT BINARY, FREEZE)"
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            copy.write(_COPY_SIGNATURE)
            for batch in _batches(dataset):
                copy.write(encode_binary_copy(batch, batch_id))
                rows += batch.num_rows
            copy.write(_COPY_TRAILER)
        t1 = time.perf_counter()
        conn.execute(f"SET LOCAL maintenance_work_mem = '{INDEX_MAINTENANCE_WORK_MEM}'")
        try:
            # The index matching the parent's primary key, so ATTACH adopts it instead of building one.
            conn.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT {side_table(batch_id)}_pkey PRIMARY KEY (batch_id, user_id, rank)"
            )
        except pg_errors.UniqueViolation as err:
            detail = err.diag.message_detail or one_line(err)
            raise BatchValidationError("unique (user_id, rank)", detail) from None
        # Same owner as the parent, so any member of recsys_writer can later detach and drop it.
        conn.execute(f"ALTER TABLE {table} OWNER TO recsys_writer")
        t2 = time.perf_counter()
    return rows, t1 - t0, t2 - t1


# --------------------------------------------------------------------------- validation


def _first(conn, sql: str, params: dict | None = None) -> str | None:
    cur = conn.execute(sql, params or {})
    row = cur.fetchone()
    if row is None:
        return None
    return ", ".join(f"{d.name}={v!r}" for d, v in zip(cur.description, row))


def _validate(
    conn, batch_id: int, k: int, rows: int, expected_users: int | None, known_items: set[str] | None
) -> int:
    """Run the checks on the side table; return the number of distinct users."""
    table = f"recsys.{side_table(batch_id)}"
    sample = "user_id, rank, item_id, score"
    if rows == 0:
        raise BatchValidationError("at least one row", "the recommendations file has no rows")
    bad = _first(conn, f"SELECT {sample} FROM {table} WHERE rank < 1 OR rank > %(k)s LIMIT 1", {"k": k})
    if bad:
        raise BatchValidationError(f"rank in 1..{k}", bad)
    bad = _first(
        conn,
        f"SELECT {sample} FROM {table} "
        "WHERE score = 'NaN'::real OR score = 'Infinity'::real OR score = '-Infinity'::real LIMIT 1",
    )
    if bad:
        raise BatchValidationError("score is finite", bad)
    bad = _first(
        conn,
        f"SELECT user_id, item_id, count(*) AS copies FROM {table} "
        "GROUP BY user_id, item_id HAVING count(*) > 1 LIMIT 1",
    )
    if bad:
        raise BatchValidationError("unique (user_id, item_id)", bad)
    # With (user_id, rank) unique and rank >= 1, max(rank) = count(*) iff the ranks run 1..n.
    users, gap = conn.execute(
        f"SELECT count(*), (array_agg(user_id) FILTER (WHERE top <> n))[1] "
        f"FROM (SELECT user_id, max(rank) AS top, count(*) AS n FROM {table} GROUP BY user_id) AS per_user"
    ).fetchone()
    if gap is not None:
        ranks = [r for (r,) in conn.execute(f"SELECT rank FROM {table} WHERE user_id = %s ORDER BY rank", (gap,))]
        raise BatchValidationError("ranks run 1..n per user", f"user_id={gap!r} has ranks {ranks[:20]}")
    if expected_users is not None and users != expected_users:
        raise BatchValidationError("user count", f"{users} distinct users, expected {expected_users}")
    if known_items is not None:
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS known_items (item_id text PRIMARY KEY) ON COMMIT DROP")
        with conn.cursor() as cur, cur.copy("COPY known_items (item_id) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text"])
            for item in known_items:
                copy.write_row((item,))
        bad = _first(
            conn,
            f"SELECT {sample} FROM {table} AS r "
            "WHERE NOT EXISTS (SELECT 1 FROM known_items AS i WHERE i.item_id = r.item_id) LIMIT 1",
        )
        if bad:
            raise BatchValidationError("item_id is a known item", bad)
    return int(users)


# --------------------------------------------------------------------------- switch


def _switch(conn, batch_id: int, ds: date, rows: int, users: int, summary: dict) -> list[int]:
    """Attach the side table and publish the batch in one transaction; return the replaced ids."""
    for attempt in range(1, SWITCH_ATTEMPTS + 1):
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{SWITCH_LOCK_TIMEOUT_MS}ms'")
                conn.execute(f"SET LOCAL statement_timeout = '{SWITCH_STATEMENT_TIMEOUT_MS}ms'")
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (PUBLISH_LOCK_NAMESPACE, ds.toordinal()))
                # ATTACH alone takes SHARE UPDATE EXCLUSIVE on the parent, which lets a reader plan
                # without the new partition and then, with a later snapshot, see the new batch as
                # current: an empty result. Blocking readers for these few milliseconds rules it out.
                conn.execute("LOCK TABLE recsys.recommendations IN ACCESS EXCLUSIVE MODE")
                conn.execute(
                    f"ALTER TABLE recsys.recommendations ATTACH PARTITION recsys.{side_table(batch_id)} "
                    f"FOR VALUES IN ({int(batch_id)})"
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
                    (rows, users, Jsonb(summary), batch_id),
                ).rowcount
                if done != 1:
                    raise DatabaseError(f"batch {batch_id} is no longer 'validating' (marked by another process)")
            return sorted(replaced)
        except (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected) as err:
            if attempt == SWITCH_ATTEMPTS:
                raise DatabaseError(
                    f"switching in batch {batch_id}: lock not granted after {SWITCH_ATTEMPTS} tries "
                    f"({one_line(err)}); long-running readers hold recsys.recommendations"
                ) from None
            log.warning("switch of batch %s waited too long for a lock (try %s); retrying", batch_id, attempt)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def _mark_failed(url: str, conn, batch_id: int, error: str) -> None:
    """Record the failure and drop the side table; best effort, on a fresh connection if needed."""
    own = None
    try:
        if conn.closed or conn.broken:
            own = conn = connect(url, autocommit=True)
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{SWITCH_LOCK_TIMEOUT_MS}ms'")
            conn.execute(f"DROP TABLE IF EXISTS recsys.{side_table(batch_id)}")
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


def publish_batch(
    url: str,
    *,
    ds: date,
    model_version: str,
    recs_path: Path,
    k: int,
    run_id: str | None = None,
    expected_users: int | None = None,
    known_items: set[str] | None = None,
) -> PublishResult:
    """Load, validate and switch in the recommendations in `recs_path` as the batch for `ds`.

    Re-publishing a date replaces that date's batch; an older date never displaces a newer
    one in `current_recommendations`. Raises `BatchValidationError` (a `DatabaseError`) for a
    batch that fails a check; the batch is then 'failed' and the current batch is untouched.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    started = time.perf_counter()
    conn = connect(url, autocommit=True)
    try:
        batch_id = conn.execute(
            "INSERT INTO recsys.batches (ds, model_version, status, k, run_id) "
            "VALUES (%s, %s, 'loading', %s, %s) RETURNING batch_id",
            (ds, model_version, k, run_id),
        ).fetchone()[0]
    except Exception as err:
        conn.close()
        raise DatabaseError(f"registering a batch for {ds}: {one_line(err)}") from None
    try:
        try:
            dataset = _dataset(Path(recs_path))
            rows, copy_s, index_s = _load(conn, batch_id, dataset)
            conn.execute(f"ANALYZE recsys.{side_table(batch_id)}")
            conn.execute("UPDATE recsys.batches SET status = 'validating' WHERE batch_id = %s", (batch_id,))
            t1 = time.perf_counter()
            with conn.transaction():  # one transaction so the temp table of known items drops itself
                # The checks group the whole batch; in memory rather than spilled to disk.
                conn.execute(f"SET LOCAL work_mem = '{VALIDATE_WORK_MEM}'")
                users = _validate(conn, batch_id, k, rows, expected_users, known_items)
            validate_s = time.perf_counter() - t1
            summary = {
                "source": str(recs_path),
                "copy_seconds": round(copy_s, 3),
                "copy_rows_per_second": round(rows / copy_s) if copy_s > 0 else None,
                "index_seconds": round(index_s, 3),
                "validate_seconds": round(validate_s, 3),
            }
            replaced = _switch(conn, batch_id, ds, rows, users, summary)
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
        conn.close()
    seconds = time.perf_counter() - started
    log.info(
        "published batch %s for %s: %s rows, %s users in %.2fs (COPY %.0f rows/s); replaced %s",
        batch_id, ds, rows, users, seconds, rows / copy_s if copy_s > 0 else 0, replaced,
    )
    return PublishResult(batch_id, rows, users, seconds, replaced)
