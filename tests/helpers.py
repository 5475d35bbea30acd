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


def interactions_from_raw(lake_root, ds: dt.date, holdout_days: int = 1):
    """Generated raw events -> Interactions with a by-day split, without Spark (fast unit tests)."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from recsys.data.interactions import EVENT_CODE, Interactions

    t = pads.dataset(f"{lake_root}/raw/events", format="parquet", partitioning="hive").to_table()
    users, user = np.unique(t.column("user_id").to_numpy(zero_copy_only=False).astype(str), return_inverse=True)
    _, item = np.unique(t.column("item_id").to_numpy(zero_copy_only=False).astype(str), return_inverse=True)
    ts = pc.cast(t.column("ts"), "int64").to_numpy()
    day_us = 86_400_000_000
    end = (np.datetime64(ds) - np.datetime64("1970-01-01")).astype("timedelta64[D]").astype(np.int64) * day_us
    split = np.where(ts >= end - (holdout_days - 1) * day_us, 2, np.where(ts >= end - holdout_days * 2 * day_us + day_us, 1, 0))
    event = np.array([EVENT_CODE[e] for e in t.column("event_type").to_pylist()], np.int8)
    order = np.lexsort((ts, user))
    return Interactions(
        users, user[order].astype(np.int32), item[order].astype(np.int32), event[order], ts[order],
        np.full(len(ts), np.nan, np.float32), split[order].astype(np.int8), int(item.max()) + 1,
    )


def assert_top_k_follows_scores(model, histories: list, scores, k: int = 3) -> None:
    """top_k over `model` (fast path or not) picks each user's k best `scores`, seen items excluded."""
    import numpy as np

    from recsys.scoring import top_k

    exclude = [np.unique(h) for h in histories]
    items, _ = top_k(model, histories, k, exclude=exclude)
    for r, ex in enumerate(exclude):
        s = np.array(scores[r], copy=True)
        s[ex] = -np.inf
        assert set(items[r]) == set(np.argsort(-s)[:k])
