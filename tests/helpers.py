"""Small shared test helpers (not fixtures)."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg


def fresh_database(pg_url: str) -> str:
    """A new empty database on the test server, so tests never share a `recsys` schema."""
    name = "t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base, _, query = pg_url.partition("?")
    return base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")


def published(url: str) -> list[tuple]:
    """Every row a downstream reader sees right now."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT user_id, rank, item_id, score FROM recsys.current_recommendations ORDER BY user_id, rank"
        ).fetchall()


# A tiny but real synthetic log: enough users for the split, few enough for a fast suite.
TINY = dict(n_users=150, n_items=120, days=12, end_date=dt.date(2026, 11, 27), seed=3)
