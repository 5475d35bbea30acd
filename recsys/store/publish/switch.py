"""Checking what landed, then the atomic switch: attach the side tables, insert the fallback list
and publish the batch in one short transaction, so readers see the old batch or the new one."""

from __future__ import annotations

import logging
import time
from datetime import date

from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from recsys.errors import DatabaseError
from recsys.store.db import one_line
from recsys.store.publish.fallback import Fallback, insert_fallback
from recsys.store.publish.lists import BatchValidationError, side_table
from recsys.store.publish.load import Loaded

log = logging.getLogger(__name__)

# The switch waits at most this long for a lock, then retries: a queued ACCESS EXCLUSIVE
# request would stall every new reader behind it, so waits are kept short.
SWITCH_LOCK_TIMEOUT_MS = 2_000
SWITCH_ATTEMPTS = 5
# Hard cap on any statement of the switch; it only touches catalog rows and a few batches rows.
SWITCH_STATEMENT_TIMEOUT_MS = 30_000


def verify(conn, batch_id: int, loaded: Loaded) -> None:
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


def check_counts(recs: Loaded, expected_users: int | None, expected_rows: int | None) -> None:
    if recs.rows == 0:
        raise BatchValidationError("at least one row", "the recommendations file has no rows")
    if expected_users is not None and recs.lists != expected_users:
        raise BatchValidationError("user count", f"{recs.lists} distinct users, expected {expected_users}")
    if expected_rows is not None and recs.rows != expected_rows:
        raise BatchValidationError(
            "row count", f"{recs.rows} rows, expected {expected_rows} (users x k within the exclusions)"
        )


def switch(conn, batch_id: int, ds: date, loaded: list[Loaded], summary: dict,
           fallback: Fallback | None = None) -> list[int]:
    """Add the fallback list, attach the side tables and publish the batch in one transaction;
    return the replaced ids."""
    recs = loaded[0]
    for attempt in range(1, SWITCH_ATTEMPTS + 1):
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{SWITCH_LOCK_TIMEOUT_MS}ms'")
                conn.execute(f"SET LOCAL statement_timeout = '{SWITCH_STATEMENT_TIMEOUT_MS}ms'")
                # Before the locks below, so readers wait for the attach alone; the view shows these
                # rows only once the batch is published, which is this same transaction.
                if fallback is not None:
                    insert_fallback(conn, batch_id, fallback)
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
