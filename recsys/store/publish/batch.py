"""`publish_batch`: claim the date, load, validate, switch in; on any failure mark the batch 'failed'."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pyarrow as pa

from recsys.errors import DatabaseError, RecsysError
from recsys.store.db import connect, one_line
from recsys.store.publish.fallback import read_fallback
from recsys.store.publish.lifecycle import claim_date, clean_abandoned, mark_failed, release_date
from recsys.store.publish.lists import (
    RECOMMENDATIONS,
    SIMILAR_ITEMS,
    BatchValidationError,
    PublishConflictError,
)
from recsys.store.publish.load import Loaded, PhaseHook, load_lists
from recsys.store.publish.switch import check_counts, switch, verify

log = logging.getLogger(__name__)


@dataclass
class PublishResult:
    batch_id: int
    rows: int
    users: int
    seconds: float
    replaced_batch_ids: list[int] = field(default_factory=list)
    similar_rows: int = 0
    similar_items: int = 0
    fallback_rows: int = 0


def _known_array(known_items) -> pa.Array | None:
    if known_items is None:
        return None
    if isinstance(known_items, pa.ChunkedArray):
        known_items = known_items.combine_chunks()
    if isinstance(known_items, pa.Array):
        return known_items.cast(pa.string())
    return pa.array(list(known_items), type=pa.string())


def _no_phase(phase: str, batch_id: int) -> None:
    pass


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
    fallback_path: Path | None = None,
    on_phase: PhaseHook | None = None,
) -> PublishResult:
    """Load, validate and switch in the lists in `recs_path` (and `similar_path`, and the fallback
    list in `fallback_path`) as the batch for `ds`.

    Re-publishing a date replaces that date's batch; an older date never displaces a newer one
    in the views. Raises `BatchValidationError` (a `DatabaseError`) for a batch that fails a
    check: the batch is then 'failed' and the current batch is untouched; `PublishConflictError`
    when another publisher of `ds` is running. `on_phase(phase, batch_id)`, when given, is called
    at "loading", after every "copy" chunk, and at "validating" and "switching", so a caller can
    hold the publisher at a known point.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    phase = on_phase or _no_phase
    started = time.perf_counter()
    conn = connect(url, autocommit=True)
    try:
        try:
            batch_id = claim_date(conn, ds, model_version, k, run_id)
        except PublishConflictError:
            raise
        except Exception as err:
            raise DatabaseError(f"registering a batch for {ds}: {one_line(err)}") from None
        try:
            clean_abandoned(conn, ds, batch_id)
            phase("loading", batch_id)
            t_load = time.perf_counter()
            known = _known_array(known_items)
            loaded = [load_lists(conn, batch_id, RECOMMENDATIONS, Path(recs_path), k, known, phase)]
            if similar_path is not None:
                loaded.append(
                    load_lists(conn, batch_id, SIMILAR_ITEMS, Path(similar_path), similar_k or k, known, phase)
                )
            fallback = read_fallback(Path(fallback_path), k, known) if fallback_path is not None else None
            conn.execute("UPDATE recsys.batches SET status = 'validating' WHERE batch_id = %s", (batch_id,))
            phase("validating", batch_id)
            t_validate = time.perf_counter()
            for part in loaded:
                verify(conn, batch_id, part)
            check_counts(loaded[0], expected_users, expected_rows)
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
            if fallback is not None:
                summary.update(fallback_source=fallback.source, fallback_rows=fallback.rows)
            phase("switching", batch_id)
            replaced = switch(conn, batch_id, ds, loaded, summary, fallback)
        except BatchValidationError as err:
            named = BatchValidationError(err.check, err.example, batch_id=batch_id, ds=ds)
            mark_failed(url, conn, batch_id, str(named))
            raise named from None
        except RecsysError as err:
            mark_failed(url, conn, batch_id, one_line(err))
            raise
        except Exception as err:
            message = f"publishing batch {batch_id} for {ds}: {one_line(err)}"
            mark_failed(url, conn, batch_id, message)
            raise DatabaseError(message) from err
    finally:
        release_date(conn, ds)
        conn.close()
    seconds = time.perf_counter() - started
    similar = loaded[1] if len(loaded) > 1 else Loaded(SIMILAR_ITEMS)
    log.info(
        "published batch %s for %s: %s rows, %s users (+%s similar-item rows) in %.2fs; replaced %s",
        batch_id, ds, recs.rows, recs.lists, similar.rows, seconds, replaced,
    )
    return PublishResult(
        batch_id, recs.rows, recs.lists, seconds, replaced, similar.rows, similar.lists,
        fallback.rows if fallback is not None else 0,
    )
