"""The fallback list against a real PostgreSQL: published in the batch's switch, read by the app's
query for a user the serving batch has no list for, switched and dropped with its batch."""

from __future__ import annotations

import argparse
import re

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.errors import DatabaseError
from recsys.store.db import read_query
from recsys.store.publish import FALLBACK_SCHEMA, BatchValidationError, publish_batch
from recsys.store.retention import apply_retention
from tests.test_store_publish import D1, D2, FIRST, SECOND, batch, db, write_recs  # noqa: F401 (db: fixture)

K = 2
# (rank, item_id, score, reason), as the score stage writes them
POPULAR_1 = [(1, "c", 0.8, "popular"), (2, "a", 0.6, "popular")]
POPULAR_2 = [(1, "d", 0.9, "popular"), (2, "b", 0.3, None)]  # a missing reason reads as 'popular'


def write_fallback(path, rows):
    columns = FALLBACK_SCHEMA.names
    pq.write_table(pa.Table.from_pylist([dict(zip(columns, r)) for r in rows], schema=FALLBACK_SCHEMA), path)
    return path


def publish(url, tmp_path, name, recs, fallback, **extra):
    return publish_batch(
        url, ds=extra.pop("ds", D1), model_version=name, recs_path=write_recs(tmp_path / f"{name}.parquet", recs),
        k=K, fallback_path=write_fallback(tmp_path / f"{name}-fallback.parquet", fallback), **extra,
    )


def top_k(url, user, k=K):
    """The app's query, run as the reader role: (item_id, rank, reason) rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET ROLE recsys_reader")
        rows = conn.execute(read_query("top_k_for_user"), {"user_id": user, "k": k}).fetchall()
    return [(item, rank, reason) for item, _, rank, reason in rows]


def stored(url):
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT batch_id, rank, item_id FROM recsys.fallback_items ORDER BY 1, 2").fetchall()


def test_unknown_user_gets_the_fallback_and_a_known_user_their_own_list(db, tmp_path):
    first = publish(db, tmp_path, "m1", FIRST, POPULAR_1)
    assert first.fallback_rows == K
    assert top_k(db, "a-new-user") == [("c", 1, "popular"), ("a", 2, "popular")]
    assert top_k(db, "a-new-user", k=1) == [("c", 1, "popular")]
    assert top_k(db, "u1") == [("a", 1, "bought with x"), ("b", 2, None)]
    assert batch(db, first.batch_id)["summary"]["fallback_rows"] == K


def test_the_fallback_switches_with_its_batch_and_retention_drops_the_old_one(db, tmp_path):
    first = publish(db, tmp_path, "m1", FIRST, POPULAR_1)
    second = publish(db, tmp_path, "m2", SECOND, POPULAR_2, ds=D2)
    assert top_k(db, "a-new-user") == [("d", 1, "popular"), ("b", 2, "popular")]
    assert top_k(db, "u3") == [("d", 1, "popular"), ("b", 2, "popular")]  # u3 is not in the second batch
    with psycopg.connect(db) as conn:
        assert {b for (b,) in conn.execute("SELECT batch_id FROM recsys.current_fallback")} == {second.batch_id}
    assert apply_retention(db, today=D2, keep_days=0) == [first.batch_id]
    assert stored(db) == [(second.batch_id, 1, "d"), (second.batch_id, 2, "b")]


def test_a_batch_without_a_fallback_list_serves_none(db, tmp_path):
    publish(db, tmp_path, "m1", FIRST, POPULAR_1)
    publish_batch(db, ds=D2, model_version="m2", recs_path=write_recs(tmp_path / "plain.parquet", SECOND), k=K)
    assert top_k(db, "a-new-user") == []
    assert top_k(db, "u1") == [("d", 1, "new"), ("a", 2, None)]


BAD_FALLBACKS = [
    # (id, rows, check named)
    ("unknown item", [(1, "zz", 0.5, "popular")], "item_id is a known item"),
    ("rank gap", [(2, "a", 0.5, "popular")], "ranks run 1..n per list"),
    ("same item twice", [(1, "a", 0.5, "popular"), (2, "a", 0.4, "popular")], "unique (list, item_id)"),
    ("longer than k", [(1, "a", 0.5, None), (2, "b", 0.4, None), (3, "c", 0.3, None)], "rank in 1..2"),
    ("nan score", [(1, "a", float("nan"), None)], "score is finite"),
    ("empty", [], "fallback list has at least one row"),
]


@pytest.mark.parametrize("rows, check", [b[1:] for b in BAD_FALLBACKS], ids=[b[0] for b in BAD_FALLBACKS])
def test_a_bad_fallback_fails_the_batch_and_keeps_the_previous_one(db, tmp_path, rows, check):
    good = publish(db, tmp_path, "m1", FIRST, POPULAR_1)
    with pytest.raises(BatchValidationError, match=re.escape(f"failed check '{check}'")):
        publish(db, tmp_path, "m2", SECOND, rows, known_items={"a", "b", "c", "d"})
    assert top_k(db, "a-new-user") == [("c", 1, "popular"), ("a", 2, "popular")]
    assert top_k(db, "u3") == [("b", 1, None)]
    assert stored(db) == [(good.batch_id, 1, "c"), (good.batch_id, 2, "a")]


def test_a_switch_that_fails_leaves_the_previous_fallback(db, tmp_path, monkeypatch):
    import recsys.store.publish.switch as switch

    monkeypatch.setattr(switch, "SWITCH_LOCK_TIMEOUT_MS", 100)
    monkeypatch.setattr(switch, "SWITCH_ATTEMPTS", 1)
    good = publish(db, tmp_path, "m1", FIRST, POPULAR_1)
    with psycopg.connect(db) as reader:  # an open transaction keeps its ACCESS SHARE lock
        reader.execute("SELECT count(*) FROM recsys.current_recommendations").fetchone()
        with pytest.raises(DatabaseError, match="lock not granted"):
            publish(db, tmp_path, "m2", SECOND, POPULAR_2)
        reader.rollback()
    assert stored(db) == [(good.batch_id, 1, "c"), (good.batch_id, 2, "a")]
    assert top_k(db, "a-new-user") == [("c", 1, "popular"), ("a", 2, "popular")]


def test_recsys_query_prints_the_fallback_for_an_unknown_user(db, tmp_path, capsys):
    from recsys.cli import cmd_query

    publish(db, tmp_path, "m1", FIRST, POPULAR_1)
    args = argparse.Namespace(lake_root=str(tmp_path), database_url=db, top_k=None, spark_master=None,
                              model_kind=None, user="a-new-user", k=None)
    cmd_query(args)
    header, rule, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == ["rank", "item_id", "score", "reason"] and set(rule) <= {"-", " "}
    assert [line.split()[:2] for line in lines] == [["1", "c"], ["2", "a"]]
    assert all(line.rstrip().endswith("popular") for line in lines)
