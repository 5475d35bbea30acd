"""Retention: drop the partitions of batches nobody will serve again, and what killed publishers left.

A batch's partitions (its user lists and similar-item lists) are dropped (DETACH, then DROP TABLE),
and its fallback list's rows deleted, when the batch is 'replaced' or 'failed', or when its ds is
older than `today - keep_days`; the batch `current_batch` points at is never dropped, however old.
A batch still 'loading' or 'validating' is abandoned when no session holds its date's publisher
lock (a killed publisher's lock goes with its connection): its side tables are dropped at once.
Dropped batches keep their `batches` row, with status 'dropped', so the history stays readable.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

from recsys.errors import DatabaseError
from recsys.store.db import connect, one_line
from recsys.store.publish import PUBLISH_LOCK_NAMESPACE, SPECS, side_table

log = logging.getLogger(__name__)

# DETACH needs ACCESS EXCLUSIVE on the parent: never queue behind readers for long.
LOCK_TIMEOUT_MS = 5_000

# Is a publisher of this batch's date alive? It holds pg_advisory_lock(namespace, ds ordinal)
# for its whole run; reading pg_locks takes no lock, so retention never blocks a publisher.
_PUBLISHER_ALIVE = f"""
EXISTS (
    SELECT 1 FROM pg_locks AS l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
      AND l.classid = {PUBLISH_LOCK_NAMESPACE}::oid
      AND l.objid = (b.ds - DATE '0001-01-01' + 1)::oid
)
"""

_CANDIDATES = f"""
SELECT b.batch_id
FROM recsys.batches AS b
WHERE b.batch_id IS DISTINCT FROM (SELECT c.batch_id FROM recsys.current_batch AS c)
  AND (b.status IN ('replaced', 'failed')
       OR (b.status = 'published' AND b.ds < %(cutoff)s)
       OR (b.status IN ('loading', 'validating') AND NOT {_PUBLISHER_ALIVE}))
ORDER BY b.batch_id
"""

# Side tables that no batch row accounts for any more (row deleted by hand, or already 'dropped');
# `recommendations_b<id>` are side tables of the row-per-rank layout before migration 0010.
_STRAY_TABLES = """
SELECT t.relname
FROM pg_class AS t
JOIN pg_namespace AS n ON n.oid = t.relnamespace
WHERE n.nspname = 'recsys' AND t.relkind = 'r' AND NOT t.relispartition
  AND t.relname ~ '^(recommendation_lists|similar_item_lists|recommendations)_b[0-9]+$'
  AND NOT EXISTS (
      SELECT 1 FROM recsys.batches AS b
      WHERE b.batch_id = substring(t.relname from '_b([0-9]+)$')::bigint AND b.status <> 'dropped')
ORDER BY t.relname
"""


def _attached(conn, batch_id: int) -> list:
    """The specs whose partition of `batch_id` is attached."""
    names = [side_table(batch_id, spec) for spec in SPECS]
    rows = dict(
        conn.execute(
            "SELECT t.relname, t.relispartition FROM pg_class AS t JOIN pg_namespace AS n ON n.oid = t.relnamespace "
            "WHERE n.nspname = 'recsys' AND t.relname = ANY(%s)",
            (names,),
        ).fetchall()
    )
    return [spec for spec, name in zip(SPECS, names) if rows.get(name)]


def _drop_one(conn, batch_id: int, cutoff: date) -> bool:
    """Drop one batch's partitions in its own transaction; False if it no longer qualifies."""
    with conn.transaction():
        conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
        attached = _attached(conn, batch_id)
        for spec in attached:  # SPECS order, as the publisher's switch locks them
            # Taken before re-checking, so no publisher can switch batches in between.
            conn.execute(f"LOCK TABLE recsys.{spec.parent} IN ACCESS EXCLUSIVE MODE")
        still = conn.execute(
            f"SELECT b.status FROM recsys.batches AS b WHERE b.batch_id = %(id)s AND b.batch_id IN ({_CANDIDATES}) "
            "FOR UPDATE OF b",
            {"id": batch_id, "cutoff": cutoff},
        ).fetchone()
        if still is None:
            return False
        for spec in attached:
            conn.execute(f"ALTER TABLE recsys.{spec.parent} DETACH PARTITION recsys.{side_table(batch_id, spec)}")
        for spec in SPECS:
            conn.execute(f"DROP TABLE IF EXISTS recsys.{side_table(batch_id, spec)}")
        conn.execute("DELETE FROM recsys.fallback_items WHERE batch_id = %s", (batch_id,))
        conn.execute(
            "UPDATE recsys.batches SET status = 'dropped', finished_at = coalesce(finished_at, now()), "
            "error = CASE WHEN status IN ('loading', 'validating') "
            "THEN coalesce(error, 'abandoned while ' || status || '; dropped by retention') ELSE error END "
            "WHERE batch_id = %s",
            (batch_id,),
        )
    return True


def apply_retention(url: str, *, today: date, keep_days: int) -> list[int]:
    """Drop expired, replaced, failed and abandoned batches' partitions; return their batch ids."""
    if keep_days < 0:
        raise ValueError(f"keep_days must be >= 0, got {keep_days}")
    cutoff = today - timedelta(days=keep_days)
    dropped: list[int] = []
    conn = connect(url, autocommit=True)
    try:
        candidates = [r for (r,) in conn.execute(_CANDIDATES, {"cutoff": cutoff})]
        for batch_id in candidates:
            try:
                if _drop_one(conn, batch_id, cutoff):
                    dropped.append(batch_id)
            except Exception as err:
                raise DatabaseError(f"retention: dropping batch {batch_id}: {one_line(err)}") from None
        for (table,) in conn.execute(_STRAY_TABLES).fetchall():
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
                conn.execute(f"DROP TABLE IF EXISTS recsys.{table}")
            log.info("retention: dropped stray side table recsys.%s", table)
    except DatabaseError:
        raise
    except Exception as err:
        raise DatabaseError(f"retention: {one_line(err)}") from None
    finally:
        conn.close()
    if dropped:
        log.info("retention (today %s, keep %s days): dropped batches %s", today, keep_days, dropped)
    return dropped
