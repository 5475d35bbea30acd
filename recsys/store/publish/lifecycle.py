"""A batch's life around the load: the date's publisher lock, its `batches` row, and the cleanup
of side tables when it fails or when a dead publisher of the same date left some behind."""

from __future__ import annotations

import logging
import time
from datetime import date

from recsys.store.db import connect, one_line
from recsys.store.publish.lists import SPECS, PublishConflictError, side_table
from recsys.store.publish.switch import SWITCH_LOCK_TIMEOUT_MS

log = logging.getLogger(__name__)

# First key of the publisher's pg_advisory_lock(int, int); the second is the date's ordinal, so
# publishers of one ds exclude each other while different dates only meet at the switch.
PUBLISH_LOCK_NAMESPACE = 730_115
# A publisher that finds its date's lock taken retries this long before giving up: long enough
# for a finished publisher's session to end, far shorter than any real load.
CLAIM_GRACE_S = 2.0


def drop_side_tables(conn, batch_id: int) -> None:
    """Drop a batch's unattached side tables (inside the caller's transaction)."""
    for spec in SPECS:
        conn.execute(f"DROP TABLE IF EXISTS recsys.{side_table(batch_id, spec)}")


def mark_failed(url: str, conn, batch_id: int, error: str) -> None:
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


def claim_date(conn, ds: date, model_version: str, k: int, run_id: str | None) -> int:
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


def release_date(conn, ds: date) -> None:
    """Give the date's lock back now (closing the connection would too, but asynchronously)."""
    if not conn.closed and not conn.broken:
        try:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", _lock_key(ds))
        except Exception as err:  # the connection's end releases it anyway
            log.warning("releasing the publish lock of %s: %s", ds, one_line(err))


def clean_abandoned(conn, ds: date, batch_id: int) -> list[int]:
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
