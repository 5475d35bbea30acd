"""Publishing, validation, the atomic switch, retention, queries and roles against a real PostgreSQL.

Each test gets its own migrated database on the session's server, so order does not matter.
The throughput benchmark (1M rows) reproduces with:
    .venv/bin/pytest -q -s tests/test_store_publish.py -k throughput
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from datetime import date
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.errors import DatabaseError, InputError
from recsys.store.db import read_query
from recsys.store.migrate import migrate
from recsys.store.publish import (
    RECS_SCHEMA,
    SIMILAR_SCHEMA,
    PUBLISH_LOCK_NAMESPACE,
    BatchValidationError,
    PublishConflictError,
    encode_lists,
    publish_batch,
)
from recsys.store.retention import apply_retention

D1, D2, D3 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)

# Hand-written batches: (user_id, rank, item_id, score, reason)
FIRST = [
    ("u1", 1, "a", 0.9, "bought with x"),
    ("u1", 2, "b", 0.5, None),
    ("u2", 1, "c", 0.7, "popular"),
    ("u2", 2, "a", 0.2, "popular"),
    ("u3", 1, "b", 0.1, None),
]
SECOND = [
    ("u1", 1, "d", 0.8, "new"),
    ("u1", 2, "a", 0.6, None),
    ("u2", 1, "c", 0.4, None),
]
# (item_id, rank, similar_item_id, score)
SIMILAR = [
    ("a", 1, "b", 0.9),
    ("a", 2, "c", 0.3),
    ("b", 1, "a", 0.9),
    ("c", 1, "a", 0.3),
]


def _with(url: str, *, db: str | None = None, user: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{user}@{netloc.rpartition('@')[2]}"
    path = f"/{db}" if db is not None else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


@pytest.fixture
def db(pg_url):
    """URL of a new database with the schema migrated; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = _with(pg_url, db=name)
    migrate(url)
    yield url
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def write_recs(path, rows, *, drop=()):
    columns = ["user_id", "rank", "item_id", "score", "reason"]
    data = {c: [r[i] for r in rows] for i, c in enumerate(columns) if c not in drop}
    types = {"user_id": pa.string(), "rank": pa.int64(), "item_id": pa.string(), "score": pa.float64(),
             "reason": pa.string()}
    pq.write_table(pa.table({c: pa.array(v, type=types[c]) for c, v in data.items()}), path)
    return path


def write_similar(path, rows):
    columns = ["item_id", "rank", "similar_item_id", "score"]
    pq.write_table(pa.Table.from_pylist([dict(zip(columns, r)) for r in rows], schema=SIMILAR_SCHEMA), path)
    return path


def current_similar(url):
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT item_id, rank, similar_item_id, score FROM recsys.current_similar_items ORDER BY item_id, rank"
        ).fetchall()


def wait_for_backend_exit(url, pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0]:
            assert time.monotonic() < deadline, f"backend {pid} still running"
            time.sleep(0.02)


def current_rows(url):
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT user_id, rank, item_id, score, reason FROM recsys.current_recommendations ORDER BY user_id, rank"
        ).fetchall()


def batch(url, batch_id):
    with psycopg.connect(url) as conn:
        cur = conn.execute("SELECT * FROM recsys.batches WHERE batch_id = %s", (batch_id,))
        return dict(zip([d.name for d in cur.description], cur.fetchone()))


def partitions(url):
    with psycopg.connect(url) as conn:
        return sorted(
            name
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'recsys.recommendation_lists'::regclass"
            )
        )


def side_tables(url):
    with psycopg.connect(url) as conn:
        return sorted(
            name
            for (name,) in conn.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = 'recsys'::regnamespace "
                "AND relkind = 'r' AND relname ~ '^(recommendation_lists|similar_item_lists)_b'"
            )
        )


def approx(rows):
    """Rows with scores rounded to float32 precision, as PostgreSQL `real` returns them."""
    return [(u, r, i, pytest.approx(s, rel=1e-6), why) for u, r, i, s, why in rows]


# --------------------------------------------------------------------------- publish


def test_publish_then_read_back_through_the_view(db, tmp_path):
    path = write_recs(tmp_path / "recs.parquet", FIRST)
    result = publish_batch(db, ds=D1, model_version="m1", recs_path=path, k=2, run_id="run-1", expected_users=3)
    assert (result.rows, result.users, result.replaced_batch_ids) == (5, 3, [])
    assert result.seconds > 0
    assert current_rows(db) == approx(sorted(FIRST))
    row = batch(db, result.batch_id)
    assert (row["status"], row["row_count"], row["user_count"], row["k"], row["run_id"]) == (
        "published", 5, 3, 2, "run-1"
    )
    assert row["published_at"] is not None and row["summary"]["copy_rows_per_second"] > 0
    assert partitions(db) == [f"recommendation_lists_b{result.batch_id}"]


def test_queries_top_k_and_batch_metadata(db, tmp_path):
    result = publish_batch(db, ds=D1, model_version="m1", recs_path=write_recs(tmp_path / "r.parquet", FIRST), k=2)
    with psycopg.connect(db) as conn:
        top = conn.execute(read_query("top_k_for_user"), {"user_id": "u1", "k": 1}).fetchall()
        meta = conn.execute(read_query("batch_metadata")).fetchall()
    assert top == [("a", pytest.approx(0.9), 1, "bought with x")]
    assert [(m[0], m[1], m[2], m[4], m[5]) for m in meta] == [(result.batch_id, D1, "m1", 5, 3)]


def test_folder_of_parquet_files_and_missing_reason_column(db, tmp_path):
    folder = tmp_path / "recs"
    folder.mkdir()
    write_recs(folder / "part-0.parquet", FIRST[:2], drop=("reason",))
    write_recs(folder / "part-1.parquet", FIRST[2:], drop=("reason",))
    result = publish_batch(db, ds=D1, model_version="m1", recs_path=folder, k=2)
    assert result.rows == 5
    assert current_rows(db) == approx(sorted((u, r, i, s, None) for u, r, i, s, _ in FIRST))


def test_republishing_a_date_replaces_its_batch(db, tmp_path):
    first = publish_batch(db, ds=D1, model_version="m1", recs_path=write_recs(tmp_path / "a.parquet", FIRST), k=2)
    second = publish_batch(db, ds=D1, model_version="m2", recs_path=write_recs(tmp_path / "b.parquet", SECOND), k=2)
    assert second.replaced_batch_ids == [first.batch_id]
    assert batch(db, first.batch_id)["status"] == "replaced"
    assert batch(db, second.batch_id)["status"] == "published"
    assert current_rows(db) == approx(sorted(SECOND))
    with psycopg.connect(db) as conn:
        assert conn.execute(
            "SELECT count(*), count(DISTINCT (user_id, rank)), min(batch_id), max(batch_id), min(ds) "
            "FROM recsys.current_recommendations"
        ).fetchone() == (3, 3, second.batch_id, second.batch_id, D1)


def test_backfilling_an_older_date_keeps_the_newer_batch_current(db, tmp_path):
    newer = publish_batch(db, ds=D2, model_version="m1", recs_path=write_recs(tmp_path / "a.parquet", FIRST), k=2)
    older = publish_batch(db, ds=D1, model_version="m1", recs_path=write_recs(tmp_path / "b.parquet", SECOND), k=2)
    assert older.replaced_batch_ids == []
    assert batch(db, older.batch_id)["status"] == "published"
    assert current_rows(db) == approx(sorted(FIRST))
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT batch_id, ds FROM recsys.current_batch").fetchone() == (newer.batch_id, D2)


def test_view_scans_only_the_current_partition(db, tmp_path):
    path = write_recs(tmp_path / "r.parquet", FIRST)
    ids = [publish_batch(db, ds=ds, model_version="m1", recs_path=path, k=2).batch_id for ds in (D1, D2, D2)]
    assert len(partitions(db)) == 3
    with psycopg.connect(db) as conn:
        plan = [
            line
            for (line,) in conn.execute(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
                "SELECT * FROM recsys.current_recommendations WHERE user_id = 'u1'"
            )
        ]
    scans = {b: [line for line in plan if f" on recommendation_lists_b{b} " in line] for b in ids}
    executed = [b for b, lines in scans.items() if not all("never executed" in line for line in lines)]
    assert all(scans.values()), plan  # each attached partition appears in the plan...
    assert executed == [ids[2]], plan  # ...but only the current one is scanned


def test_readers_see_one_complete_batch_during_switches(db, tmp_path):
    sizes = [4, 7, 3, 6, 5, 8, 2, 9, 4, 6, 3, 7]
    paths = []
    for n, users in enumerate(sizes):
        rows = [(f"u{u}", r, f"i{u}_{r}", 1.0 / r, None) for u in range(users) for r in (1, 2)]
        paths.append(write_recs(tmp_path / f"r{n}.parquet", rows))
    published = {publish_batch(db, ds=D1, model_version="m", recs_path=paths[0], k=2).batch_id: sizes[0] * 2}
    seen, stop = [], threading.Event()

    def read():
        with psycopg.connect(db, autocommit=True) as conn:
            while not stop.is_set():
                seen.append(
                    conn.execute(
                        "SELECT batch_id, count(*) FROM recsys.current_recommendations GROUP BY batch_id"
                    ).fetchall()
                )

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for n, path in enumerate(paths[1:], start=1):
            published[publish_batch(db, ds=D1, model_version="m", recs_path=path, k=2).batch_id] = sizes[n] * 2
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert len(seen) > 10
    for result in seen:
        assert len(result) == 1, result  # never empty, never two batches
        batch_id, count = result[0]
        assert count == published[batch_id]


def test_concurrent_publishers_of_one_date_never_both_serve(db, tmp_path):
    """Publishers that overlap: one publishes, the other stops with a clear message; those that
    happen not to overlap run one after the other (the later one replaces). Never duplicates.
    (The deterministic overlap, with a publisher held mid-COPY, is in test_publish_reliability.)"""
    paths = [write_recs(tmp_path / f"{n}.parquet", FIRST if n % 2 else SECOND) for n in range(4)]
    results, errors = [], []

    def run(path):
        try:
            results.append(publish_batch(db, ds=D1, model_version="m", recs_path=path, k=2))
        except PublishConflictError as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) + len(errors) == 4 and results
    for err in errors:
        assert "another publisher is already publishing 2024-03-01" in str(err) and "\n" not in str(err)
        assert batch(db, err.batch_id)["status"] == "failed"
    statuses = sorted(batch(db, r.batch_id)["status"] for r in results)
    assert statuses == ["published"] + ["replaced"] * (len(results) - 1)
    winner = next(r for r in results if batch(db, r.batch_id)["status"] == "published")
    rows = current_rows(db)
    assert len(rows) == winner.rows and len({(u, r) for u, r, *_ in rows}) == len(rows)


def test_switch_gives_up_on_a_reader_that_never_finishes(db, tmp_path, monkeypatch):
    import recsys.store.publish.switch as switch

    monkeypatch.setattr(switch, "SWITCH_LOCK_TIMEOUT_MS", 100)
    monkeypatch.setattr(switch, "SWITCH_ATTEMPTS", 2)
    good = publish_batch(db, ds=D1, model_version="m", recs_path=write_recs(tmp_path / "a.parquet", FIRST), k=2)
    with psycopg.connect(db) as reader:  # an open transaction keeps its ACCESS SHARE lock
        assert reader.execute("SELECT count(*) FROM recsys.current_recommendations").fetchone()[0] == 5
        with pytest.raises(DatabaseError, match="lock not granted after 2 tries") as err:
            publish_batch(db, ds=D1, model_version="m", recs_path=write_recs(tmp_path / "b.parquet", SECOND), k=2)
        reader.rollback()
    assert "\n" not in str(err.value)
    with psycopg.connect(db) as conn:
        statuses = conn.execute("SELECT status FROM recsys.batches ORDER BY batch_id").fetchall()
    assert statuses == [("published",), ("failed",)]
    assert side_tables(db) == [f"recommendation_lists_b{good.batch_id}"]
    assert current_rows(db) == approx(sorted(FIRST))


def test_similar_items_switch_in_with_their_batch_and_go_with_it(db, tmp_path):
    recs, sims = write_recs(tmp_path / "r.parquet", FIRST), write_similar(tmp_path / "s.parquet", SIMILAR)
    first = publish_batch(db, ds=D1, model_version="m", recs_path=recs, k=2, similar_path=sims, similar_k=2)
    assert (first.similar_rows, first.similar_items) == (4, 3)
    assert current_similar(db) == [(i, r, j, pytest.approx(x)) for i, r, j, x in SIMILAR]
    with psycopg.connect(db) as conn:
        assert conn.execute(read_query("similar_items"), {"item_id": "a", "k": 1}).fetchall() == [
            ("b", pytest.approx(0.9), 1)
        ]
    # A batch published without similar items: the view follows the batch now serving.
    second = publish_batch(db, ds=D1, model_version="m", recs_path=recs, k=2)
    assert current_similar(db) == []
    assert apply_retention(db, today=D1, keep_days=7) == [first.batch_id]
    assert side_tables(db) == [f"recommendation_lists_b{second.batch_id}"]


def test_unsorted_input_is_sorted_in_memory(db, tmp_path):
    shuffled = [FIRST[i] for i in (4, 1, 2, 0, 3)]
    result = publish_batch(db, ds=D1, model_version="m", recs_path=write_recs(tmp_path / "r.parquet", shuffled), k=2)
    assert current_rows(db) == approx(sorted(FIRST))
    assert batch(db, result.batch_id)["summary"]["sorted_in_memory"] is True


def test_many_chunks_cut_at_whole_users(db, tmp_path, monkeypatch):
    import recsys.store.publish.load as load

    monkeypatch.setattr(load, "CHUNK_ROWS", 7)  # lists of 1..5 items straddle every chunk boundary
    rows = [(f"u{u:03d}", r, f"i{(u * 3 + r) % 40}", 1.0 / r, None) for u in range(60) for r in range(1, 1 + u % 5 + 1)]
    result = publish_batch(db, ds=D1, model_version="m", recs_path=write_recs(tmp_path / "r.parquet", rows), k=5,
                           expected_users=60, expected_rows=len(rows))
    assert (result.users, result.rows) == (60, len(rows))
    assert current_rows(db) == approx(rows)


# --------------------------------------------------------------------------- validation


def _dup_rank(rows):
    return rows + [("u1", 2, "z", 0.1, None)]


BAD_BATCHES = [
    # (id, rows transform, extra publish kwargs, check named, example fragment)
    ("duplicate rank", _dup_rank, {}, "unique (user_id, rank)", "(user_id, rank)"),
    ("nan score", lambda rows: rows + [("u3", 2, "c", math.nan, None)], {}, "score is finite", "'u3'"),
    ("inf score", lambda rows: rows + [("u3", 2, "c", math.inf, None)], {}, "score is finite", "inf"),
    ("rank above k", lambda rows: rows + [("u3", 3, "c", 0.1, None)], {}, "rank in 1..2", "rank=3"),
    ("rank zero", lambda rows: [("u4", 0, "c", 0.1, None)] + rows, {}, "rank in 1..2", "rank=0"),
    ("same item twice", lambda rows: rows + [("u3", 2, "b", 0.1, None)], {}, "unique (user_id, item_id)", "'b'"),
    ("gap in ranks", lambda rows: [r for r in rows if r[:2] != ("u1", 1)], {}, "ranks run 1..n per user",
     "user_id='u1' has ranks [2]"),
    ("unknown item", lambda rows: rows, {"known_items": {"a", "b"}}, "item_id is a known item", "item_id='c'"),
    ("user count", lambda rows: rows, {"expected_users": 4}, "user count", "3 distinct users, expected 4"),
    ("null item", lambda rows: rows + [("u3", 2, None, 0.1, None)], {}, "item_id not null", "'u3'"),
    ("empty item", lambda rows: rows + [("u3", 2, "", 0.1, None)], {}, "item_id is not empty", "'u3'"),
    ("separator", lambda rows: rows + [("u3", 2, "a\x1fb", 0.1, None)], {},
     "item_id has no U+001F (unit separator)", "'u3'"),
    ("separator in reason", lambda rows: rows + [("u3", 2, "d", 0.1, "x\x1f")], {},
     "reason has no U+001F (unit separator)", "'u3'"),
    ("no rows", lambda rows: [], {}, "at least one row", "no rows"),
    ("row count", lambda rows: rows, {"expected_rows": 6}, "row count", "5 rows, expected 6"),
]


@pytest.mark.parametrize(
    "make, extra, check, example", [b[1:] for b in BAD_BATCHES], ids=[b[0] for b in BAD_BATCHES]
)
def test_invalid_batch_fails_clearly_and_leaves_current_untouched(db, tmp_path, make, extra, check, example):
    good = publish_batch(db, ds=D1, model_version="m1", recs_path=write_recs(tmp_path / "g.parquet", FIRST), k=2)
    bad_path = write_recs(tmp_path / "bad.parquet", make(list(FIRST)))
    with pytest.raises(BatchValidationError) as err:
        publish_batch(db, ds=D1, model_version="m2", recs_path=bad_path, k=2, **extra)
    message = str(err.value)
    assert f"failed check '{check}'" in message and example in message, message
    assert "\n" not in message
    assert isinstance(err.value, DatabaseError)
    failed = batch(db, err.value.batch_id)
    assert failed["status"] == "failed" and failed["error"] == message
    assert batch(db, good.batch_id)["status"] == "published"
    assert current_rows(db) == approx(sorted(FIRST))
    assert side_tables(db) == [f"recommendation_lists_b{good.batch_id}"]


BAD_SIMILAR = [
    ("itself", [("a", 1, "a", 0.5)], "similar_item_id is not the item itself", "item_id='a'"),
    ("unknown neighbour", [("a", 1, "zz", 0.5)], "similar_item_id is a known item", "'zz'"),
    ("unknown item", [("zz", 1, "a", 0.5)], "item_id is a known item", "'zz'"),
    ("twice", [("a", 1, "b", 0.5), ("a", 2, "b", 0.4)], "unique (item_id, similar_item_id)", "'b'"),
    ("rank gap", [("a", 2, "b", 0.5)], "ranks run 1..n per item", "item_id='a' has ranks [2]"),
]


@pytest.mark.parametrize("rows, check, example", [b[1:] for b in BAD_SIMILAR], ids=[b[0] for b in BAD_SIMILAR])
def test_invalid_similar_items_fail_the_whole_batch(db, tmp_path, rows, check, example):
    good = publish_batch(db, ds=D1, model_version="m1", recs_path=write_recs(tmp_path / "g.parquet", FIRST), k=2)
    with pytest.raises(BatchValidationError) as err:
        publish_batch(
            db, ds=D1, model_version="m2", recs_path=write_recs(tmp_path / "r.parquet", SECOND), k=2,
            similar_path=write_similar(tmp_path / "s.parquet", rows), similar_k=2, known_items={"a", "b", "c", "d"},
        )
    assert f"failed check '{check}'" in str(err.value) and example in str(err.value), str(err.value)
    assert batch(db, good.batch_id)["status"] == "published"
    assert current_rows(db) == approx(sorted(FIRST))
    assert side_tables(db) == [f"recommendation_lists_b{good.batch_id}"]


def test_known_items_superset_passes(db, tmp_path):
    result = publish_batch(
        db, ds=D1, model_version="m", recs_path=write_recs(tmp_path / "r.parquet", FIRST), k=2,
        known_items={"a", "b", "c", "unused"},
    )
    assert result.rows == 5


def test_missing_input_and_columns_fail_the_batch(db, tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        publish_batch(db, ds=D1, model_version="m", recs_path=tmp_path / "absent.parquet", k=2)
    path = write_recs(tmp_path / "r.parquet", FIRST, drop=("score",))
    with pytest.raises(BatchValidationError, match=r"failed check 'columns': .* lacks score"):
        publish_batch(db, ds=D1, model_version="m", recs_path=path, k=2)
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT array_agg(status ORDER BY batch_id) FROM recsys.batches").fetchone()[0] == [
            "failed", "failed"
        ]


def test_list_encoder_matches_psycopg_row_encoder(db):
    """Lists COPYed through encode_lists equal the same lists COPYed through psycopg's own write_row,
    and read back through the view exactly as they went in."""
    rows = [
        ("u" * 70_000, 1, "i", 3.4028234663852886e38, None),
        ("ü—ser 😀", 1, "item\twith\ttabs", 1.5, "line\nbreak \\ backslash"),
        ("ü—ser 😀", 2, "{a,b}", -0.0, ""),
        ("ü—ser 😀", 3, "NULL", 1e-45, "'quoted' \"double\""),
        ("x", 1, "ünï", -1.25, None),
        ("y", 1, "z", 2.0, "r"),
        ("y", 2, "nbsp\u00a0", 1.0, None),
    ]
    table = pa.Table.from_pylist([dict(zip(RECS_SCHEMA.names, r)) for r in rows], schema=RECS_SCHEMA).to_batches()[0]
    sliced = table.slice(4, 3)  # offsets that do not start at zero
    columns = "batch_id, user_id, item_ids, scores, reasons"
    with psycopg.connect(db) as conn:
        for name in ("by_encoder", "by_psycopg"):
            conn.execute(f"CREATE TEMP TABLE {name} (LIKE recsys.recommendation_lists)")
        with conn.cursor() as cur, cur.copy(f"COPY by_encoder ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(b"PGCOPY\n\xff\r\n\x00" + bytes(8))
            copy.write(encode_lists(table, 7))
            copy.write(encode_lists(sliced, 8))
            copy.write(encode_lists(sliced.drop_columns(["reason"]).append_column(
                "reason", pa.nulls(3, pa.string())), 9))  # no reasons at all: NULL
            copy.write(b"\xff\xff")
        with conn.cursor() as cur, cur.copy(f"COPY by_psycopg ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "text", "text", "float4[]", "text"])
            for batch_id, part in ((7, table), (8, sliced), (9, sliced)):
                lists: dict[str, list] = {}
                for r in part.to_pylist():
                    lists.setdefault(r["user_id"], []).append(r)
                for user, items in lists.items():
                    reasons = None if batch_id == 9 else "\x1f".join(r["reason"] or "" for r in items)
                    copy.write_row([batch_id, user, "\x1f".join(r["item_id"] for r in items),
                                    [r["score"] for r in items], reasons])
        # float4send/recv round-trips bits, so equality here is exact, including -0.0 vs 0.0 via ::text.
        a, b = "SELECT *, scores::text FROM by_encoder", "SELECT *, scores::text FROM by_psycopg"
        diff = conn.execute(
            f"SELECT count(*) FROM (({a} EXCEPT ALL {b}) UNION ALL ({b} EXCEPT ALL {a})) AS d"
        ).fetchone()[0]
        count = conn.execute("SELECT count(*), sum(cardinality(scores)), count(reasons) FROM by_encoder").fetchone()
        # What the views make of it: the same unnest as current_recommendations.
        back = conn.execute(
            "SELECT l.user_id, u.rank, u.item_id, u.score, u.reason FROM by_encoder AS l "
            "CROSS JOIN LATERAL unnest(string_to_array(l.item_ids, E'\\x1f'), l.scores, "
            "string_to_array(l.reasons, E'\\x1f', '')) WITH ORDINALITY AS u (item_id, score, reason, rank) "
            "WHERE l.batch_id = 7 ORDER BY 1, 2"
        ).fetchall()
    assert diff == 0
    assert count == (8, 13, 6)
    expected = sorted((u, r, i, s, why or None) for u, r, i, s, why in rows)
    assert [(u, r, i, why) for u, r, i, _, why in back] == [(u, r, i, why) for u, r, i, _, why in expected]
    assert [s for *_, s, _ in back] == pytest.approx([s for *_, s, _ in expected], rel=1e-6)


# --------------------------------------------------------------------------- retention


def test_retention_drops_replaced_failed_old_and_abandoned_never_current(db, tmp_path):
    path = write_recs(tmp_path / "r.parquet", FIRST)
    old = publish_batch(db, ds=D1, model_version="m", recs_path=path, k=2).batch_id
    replaced = publish_batch(db, ds=D3, model_version="m", recs_path=path, k=2).batch_id
    current = publish_batch(db, ds=D3, model_version="m", recs_path=path, k=2).batch_id
    with pytest.raises(BatchValidationError):
        publish_batch(db, ds=D3, model_version="m", recs_path=write_recs(tmp_path / "x.parquet", []), k=2)
    recent = publish_batch(db, ds=D2, model_version="m", recs_path=path, k=2).batch_id
    running_ds = date(2024, 3, 4)
    with psycopg.connect(db, autocommit=True) as conn, psycopg.connect(db, autocommit=True) as publisher:
        failed = conn.execute("SELECT batch_id FROM recsys.batches WHERE status = 'failed'").fetchone()[0]
        # A publisher killed during validation (nobody holds its date's lock), and one still running
        # (its session holds the lock, as publish_batch's does).
        publisher.execute("SELECT pg_advisory_lock(%s, %s)", (PUBLISH_LOCK_NAMESPACE, running_ds.toordinal()))
        publisher_pid = publisher.info.backend_pid
        abandoned, running = (
            conn.execute(
                "INSERT INTO recsys.batches (ds, status) VALUES (%s, 'validating') RETURNING batch_id", (ds,)
            ).fetchone()[0]
            for ds in (D3, running_ds)
        )
        for b in (abandoned, running):
            conn.execute(f"CREATE TABLE recsys.recommendation_lists_b{b} (LIKE recsys.recommendation_lists)")
            conn.execute(f"CREATE TABLE recsys.similar_item_lists_b{b} (LIKE recsys.similar_item_lists)")
        # Side tables whose batch row is gone, in both layouts.
        conn.execute("CREATE TABLE recsys.recommendation_lists_b999999 (LIKE recsys.recommendation_lists)")
        conn.execute("CREATE TABLE recsys.recommendations_b999998 (user_id text)")

        dropped = apply_retention(db, today=D3, keep_days=1)  # keeps ds >= D2

        assert dropped == sorted([old, replaced, failed, abandoned])
        assert partitions(db) == sorted([f"recommendation_lists_b{current}", f"recommendation_lists_b{recent}"])
        assert side_tables(db) == sorted(
            [f"recommendation_lists_b{current}", f"recommendation_lists_b{recent}",
             f"recommendation_lists_b{running}", f"similar_item_lists_b{running}"]
        )
        assert conn.execute("SELECT to_regclass('recsys.recommendations_b999998')").fetchone()[0] is None
        assert {b: batch(db, b)["status"] for b in dropped} == dict.fromkeys(dropped, "dropped")
        assert "abandoned while validating" in batch(db, abandoned)["error"]
        assert batch(db, running)["status"] == "validating"
        assert current_rows(db) == approx(sorted(FIRST))
        assert apply_retention(db, today=D3, keep_days=1) == []
    # The running publisher's session ended without finishing: once its backend is gone, so is its lock.
    wait_for_backend_exit(db, publisher_pid)
    assert apply_retention(db, today=D3, keep_days=1) == [running]
    # However old the current batch gets, it is never dropped.
    assert apply_retention(db, today=date(2030, 1, 1), keep_days=1) == [recent]
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT batch_id FROM recsys.current_batch").fetchone()[0] == current
    assert current_rows(db) == approx(sorted(FIRST))
    assert side_tables(db) == [f"recommendation_lists_b{current}"]


def test_changed_since_previous_lists_added_and_removed_items(db, tmp_path):
    publish_batch(db, ds=D1, model_version="m", recs_path=write_recs(tmp_path / "a.parquet", FIRST), k=2)
    with psycopg.connect(db) as conn:
        only = conn.execute(read_query("changed_since_previous"), {"user_id": "u1"}).fetchall()
    assert only == [("added", "a", 1), ("added", "b", 2)]  # no previous batch yet
    publish_batch(db, ds=D2, model_version="m", recs_path=write_recs(tmp_path / "b.parquet", SECOND), k=2)
    with psycopg.connect(db) as conn:
        u1 = conn.execute(read_query("changed_since_previous"), {"user_id": "u1"}).fetchall()
        u2 = conn.execute(read_query("changed_since_previous"), {"user_id": "u2"}).fetchall()
        u3 = conn.execute(read_query("changed_since_previous"), {"user_id": "u3"}).fetchall()
    assert u1 == [("added", "d", 1), ("removed", "b", 2)]
    assert u2 == [("removed", "a", 2)]
    assert u3 == [("removed", "b", 1)]


# --------------------------------------------------------------------------- roles


READER_VIEWS = [
    "current_batch", "current_recommendations", "current_similar_items", "current_fallback", "previous_batch",
    "previous_recommendations", "batch_history",
]


def test_reader_role_reads_views_only(db, tmp_path):
    publish_batch(
        db, ds=D1, model_version="m", recs_path=write_recs(tmp_path / "r.parquet", FIRST), k=2,
        similar_path=write_similar(tmp_path / "s.parquet", SIMILAR), similar_k=2,
    )
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET ROLE recsys_reader")
        assert conn.execute("SELECT count(*) FROM recsys.current_recommendations").fetchone()[0] == 5
        assert conn.execute(read_query("top_k_for_user"), {"user_id": "u2", "k": 5}).fetchall()[0][0] == "c"
        assert conn.execute(read_query("similar_items"), {"item_id": "a", "k": 5}).fetchall()[0][0] == "b"
        assert conn.execute(read_query("changed_since_previous"), {"user_id": "u1"}).fetchall()
        assert conn.execute(read_query("batch_metadata")).fetchone()[2] == "m"
        for view in READER_VIEWS:
            conn.execute(f"SELECT * FROM recsys.{view} LIMIT 1")
        denied = [
            "SELECT * FROM recsys.recommendation_lists",
            "SELECT * FROM recsys.similar_item_lists",
            "SELECT * FROM recsys.fallback_items",
            "SELECT * FROM recsys.batches",
            "SELECT * FROM recsys.models",
            "INSERT INTO recsys.recommendation_lists VALUES (1, 'u', 'i', '{0.5}', NULL)",
            "INSERT INTO recsys.batches (ds) VALUES ('2024-01-01')",
            "UPDATE recsys.recommendation_lists SET scores = '{0}'",
            "UPDATE recsys.batches SET status = 'failed'",
            "DELETE FROM recsys.recommendation_lists",
            "DELETE FROM recsys.batches",
            "TRUNCATE recsys.batches",
            "DROP VIEW recsys.current_recommendations",
            "DROP VIEW recsys.current_batch",
            "DROP TABLE recsys.recommendation_lists",
            "DROP TABLE recsys.batches",
            "CREATE TABLE recsys.mine (x int)",
            "ALTER VIEW recsys.current_recommendations RENAME TO gone",
        ]
        for sql in denied:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied|must be owner"):
                conn.execute(sql)
        # The views are not updatable at all; the privileges say no as well.
        for sql in [
            "INSERT INTO recsys.current_recommendations (user_id) VALUES ('u')",
            "UPDATE recsys.current_recommendations SET score = 0",
            "DELETE FROM recsys.current_similar_items",
        ]:
            with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectNotInPrerequisiteState)):
                conn.execute(sql)
        for view in READER_VIEWS:
            for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
                assert not conn.execute(
                    "SELECT has_table_privilege('recsys_reader', %s, %s)", (f"recsys.{view}", privilege)
                ).fetchone()[0], (view, privilege)
        conn.execute("RESET ROLE")
        assert conn.execute("SELECT count(*) FROM recsys.recommendation_lists").fetchone()[0] == 3
        assert conn.execute("SELECT count(*) FROM recsys.current_recommendations").fetchone()[0] == 5
        grants = conn.execute(
            "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
            "WHERE grantee = 'recsys_reader' ORDER BY 1, 2"
        ).fetchall()
    assert grants == [(view, "SELECT") for view in sorted(READER_VIEWS)]


def test_a_non_superuser_writer_login_can_publish_and_retain(db, pg_url, tmp_path):
    login = f"writer_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {login} LOGIN IN ROLE recsys_writer")
    try:
        url = _with(db, user=login)
        path = write_recs(tmp_path / "r.parquet", FIRST)
        first = publish_batch(url, ds=D1, model_version="m", recs_path=path, k=2)
        second = publish_batch(url, ds=D1, model_version="m", recs_path=path, k=2)
        assert second.replaced_batch_ids == [first.batch_id]
        assert apply_retention(url, today=D1, keep_days=7) == [first.batch_id]
        assert current_rows(db) == approx(sorted(FIRST))
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {login}")


def test_bench_publish_prints_its_json_last(capsys):
    """`recsys bench publish` end to end on a small batch (its own throw-away server)."""
    import json

    from recsys.cli import main

    assert main(["bench", "publish", "--rows", "5000", "--repeats", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    last = json.loads(out[-1])
    assert set(last) == {"rows", "project_rows_per_s", "raw_copy_rows_per_s", "to_sql_rows_per_s",
                         "ratio_vs_raw_copy", "ratio_vs_to_sql"}
    assert last["rows"] == 5000 and min(last.values()) > 0
    assert any(line.startswith("psql \\copy") for line in out)


# --------------------------------------------------------------------------- throughput


@pytest.mark.slow
def test_copy_throughput_1m_rows(db, tmp_path):
    """Publishes 1M rows (20k users x 50) and prints COPY rows/s; see the module docstring to rerun."""
    users, k = 20_000, 50
    rng = np.random.default_rng(0)
    user_idx = np.repeat(np.arange(users), k)
    rank = np.tile(np.arange(1, k + 1), users)
    user_ids = pa.array(np.char.add("user", user_idx.astype(str)))
    item_ids = pa.array(np.char.add("item", ((user_idx * 7919 + rank * 13) % 100_000).astype(str)))
    table = pa.table(
        {
            "user_id": user_ids,
            "rank": rank,
            "item_id": item_ids,
            "score": rng.random(users * k).astype(np.float32),
            "reason": pa.array(np.where(rank % 2 == 0, "co-occurrence", None), type=pa.string()),
        }
    )
    path = tmp_path / "recs_1m.parquet"
    pq.write_table(table, path)
    result = publish_batch(db, ds=D1, model_version="bench", recs_path=path, k=k, expected_users=users)
    summary = batch(db, result.batch_id)["summary"]
    print(
        f"\n1M-row publish: {result.seconds:.2f}s total; COPY {summary['copy_rows_per_second']:,} rows/s "
        f"({summary['copy_seconds']}s incl. Parquet read), index {summary['index_seconds']}s, "
        f"validation {summary['validate_seconds']}s"
    )
    assert (result.rows, result.users) == (users * k, users)
    with psycopg.connect(db) as conn:
        assert conn.execute(
            "SELECT count(*), count(reason), sum(rank) FROM recsys.current_recommendations"
        ).fetchone() == (users * k, users * k // 2, users * k * (k + 1) // 2)
