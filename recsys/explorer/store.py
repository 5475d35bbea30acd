"""What the explorer reads from the recommendation store: views only, as the role `recsys_reader`.

Every connection switches to `recsys_reader` and read-only transactions before its first query,
so the explorer can see exactly what a downstream app sees and can change nothing, whatever
login the configured URL names (that login must be a member of `recsys_reader`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from psycopg.rows import dict_row

from recsys.store.db import connect, read_query

READER_ROLE = "recsys_reader"
# The fallback and similar-items lists are short shelves; more than this is never drawn.
SHELF = 50

LIST_SQL = ("SELECT rank, item_id, score, reason FROM recsys.current_recommendations "
            "WHERE user_id = %(user_id)s ORDER BY rank")
FALLBACK_SQL = "SELECT rank, item_id, score, reason FROM recsys.current_fallback ORDER BY rank LIMIT %(k)s"
PREVIOUS_SQL = "SELECT batch_id, ds, model_version FROM recsys.previous_batch"
# Scans the serving batch's lists: fine for thousands of users, an index-free count at millions.
ITEM_USERS_SQL = "SELECT count(*) AS users FROM recsys.current_recommendations WHERE item_id = %(item_id)s"
RUN_BATCH_SQL = ("SELECT batch_id, ds, model_version, status, row_count, user_count, published_at, is_current "
                 "FROM recsys.batch_history WHERE run_id = %(run_id)s ORDER BY batch_id DESC LIMIT 1")
DS_BATCH_SQL = ("SELECT batch_id, ds, model_version, status, row_count, user_count, published_at, is_current "
                "FROM recsys.batch_history WHERE ds = %(ds)s ORDER BY (status = 'published') DESC, batch_id DESC LIMIT 1")


@contextmanager
def reader(url: str):
    """A connection that can only read the views granted to recsys_reader."""
    with connect(url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(f"SET ROLE {READER_ROLE}")
        conn.execute("SET default_transaction_read_only = on")
        yield conn


def _all(conn, sql: str, params: dict[str, Any] | None = None) -> list[dict]:
    return conn.execute(sql, params or {}).fetchall()


def _one(conn, sql: str, params: dict[str, Any] | None = None) -> dict | None:
    return conn.execute(sql, params or {}).fetchone()


def serving_batch(url: str) -> dict | None:
    with reader(url) as conn:
        return _one(conn, read_query("batch_metadata"))


def batch_of_run(url: str, run_id: str | None, ds=None) -> dict | None:
    """The batch a DAG run published (by run id), else the date's published or latest batch."""
    with reader(url) as conn:
        found = _one(conn, RUN_BATCH_SQL, {"run_id": run_id}) if run_id else None
        return found or (_one(conn, DS_BATCH_SQL, {"ds": ds}) if ds else None)


def user_lists(url: str, user_id: str) -> dict:
    """The user's list in the serving batch, what changed since the previous batch, and the
    fallback list a user without a list gets; one connection, so all from the same moment."""
    with reader(url) as conn:
        own = _all(conn, LIST_SQL, {"user_id": user_id})
        return {
            "batch": _one(conn, read_query("batch_metadata")),
            "previous": _one(conn, PREVIOUS_SQL),
            "list": own,
            "changes": _all(conn, read_query("changed_since_previous"), {"user_id": user_id}),
            "fallback": [] if own else _all(conn, FALLBACK_SQL, {"k": SHELF}),
        }


def item_lists(url: str, item_id: str) -> dict:
    """The item's neighbours in the serving batch and how many users' lists hold it."""
    with reader(url) as conn:
        return {
            "batch": _one(conn, read_query("batch_metadata")),
            "similar": _all(conn, read_query("similar_items"), {"item_id": item_id, "k": SHELF}),
            "users": _one(conn, ITEM_USERS_SQL, {"item_id": item_id})["users"],
        }
