"""The reads a downstream app or an operator makes, from the SQL files in sql/queries/."""

from __future__ import annotations

from pathlib import Path

from recsys.config import Settings
from recsys.store.db import connect, resolve_url

QUERIES = Path(__file__).resolve().parents[2] / "sql" / "queries"


def _sql(name: str) -> str:
    return (QUERIES / f"{name}.sql").read_text()


def top_k_for_user(settings: Settings, user_id: str, k: int) -> list[dict]:
    with connect(resolve_url(settings)) as conn:
        cur = conn.execute(_sql("top_k_for_user"), {"user_id": user_id, "k": k})
        cols = [c.name for c in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]


def recent_batches(settings: Settings, limit: int = 10) -> list[dict]:
    with connect(resolve_url(settings)) as conn:
        cur = conn.execute(
            "SELECT batch_id, ds, status, model_version, row_count, user_count, published_at, error"
            " FROM recsys.batches ORDER BY batch_id DESC LIMIT %s",
            (limit,),
        )
        cols = [c.name for c in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]
