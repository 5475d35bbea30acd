"""spark_jobs/features.py: transforms on hand-written frames, and two nights end to end.

Every expected value below is written by hand; none is computed by the code under test.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import types as T

from recsys.config import Settings
from recsys.lake import Lake
from recsys.schema import EVENTS_SCHEMA, ITEMS_SCHEMA
from spark_jobs.features import (
    ITEM_MAP_SCHEMA,
    build_item_map,
    build_item_stats,
    build_sequences,
    build_user_stats,
    run_features,
    split_events,
)
from spark_jobs.validate import run_validation

UTC = dt.timezone.utc
DS = dt.date(2026, 11, 27)

# Events after attach_items: the validated columns + item_idx + category.
EVENTS_T = T.StructType(
    [
        T.StructField("user_id", T.StringType()),
        T.StructField("item_id", T.StringType()),
        T.StructField("event_type", T.StringType()),
        T.StructField("ts", T.TimestampType()),
        T.StructField("rating", T.DoubleType()),
        T.StructField("item_idx", T.IntegerType()),
        T.StructField("category", T.StringType()),
    ]
)
CATALOGUE_T = T.StructType(
    [
        T.StructField("item_id", T.StringType()),
        T.StructField("title", T.StringType()),
        T.StructField("description", T.StringType()),
        T.StructField("category", T.StringType()),
        T.StructField("price", T.DoubleType()),
        T.StructField("created_at", T.TimestampType()),
        T.StructField("available", T.BooleanType()),
    ]
)


def ts(day: int, hhmm: str = "12:00", month: int = 11) -> dt.datetime:
    h, m = map(int, hhmm.split(":"))
    return dt.datetime(2026, month, day, h, m, tzinfo=UTC)


def ev(user, item_id, event_type, when, rating=None, idx=0, category="c"):
    return (user, item_id, event_type, when, rating, idx, category)


def as_utc(x: dt.datetime) -> dt.datetime:
    """Spark's collect() gives naive local datetimes (the session and the test run in UTC)."""
    return x.replace(tzinfo=UTC) if x.tzinfo is None else x.astimezone(UTC)


# --- splits ----------------------------------------------------------------------------------


def test_temporal_split_by_whole_days_up_to_ds(spark):
    events = spark.createDataFrame(
        [
            ev("u1", "a", "view", ts(27, "23:59")),
            ev("u1", "a", "view", ts(26, "00:00")),  # first instant of the test window
            ev("u1", "a", "view", ts(25, "23:59")),
            ev("u1", "a", "view", ts(24, "00:00")),  # first instant of the valid window
            ev("u1", "a", "view", ts(23, "23:59")),
            ev("u2", "b", "click", ts(1)),
        ],
        EVENTS_T,
    )
    got = sorted((r.user_id, as_utc(r.ts), r.split) for r in split_events(events, DS, holdout_days=2).collect())
    assert got == [
        ("u1", ts(23, "23:59"), "train"),
        ("u1", ts(24, "00:00"), "valid"),
        ("u1", ts(25, "23:59"), "valid"),
        ("u1", ts(26, "00:00"), "test"),
        ("u1", ts(27, "23:59"), "test"),
        ("u2", ts(1), "train"),
    ]


def test_validation_window_has_its_own_length(spark):
    days = [27, 26, 25, 24, 23]
    events = spark.createDataFrame([ev("u1", "a", "view", ts(d)) for d in days], EVENTS_T)
    got = {as_utc(r.ts).day: r.split for r in split_events(events, DS, holdout_days=1, valid_days=3).collect()}
    assert got == {27: "test", 26: "valid", 25: "valid", 24: "valid", 23: "train"}


def test_split_keeps_the_event_columns(spark):
    events = spark.createDataFrame([ev("u1", "a", "rating", ts(27), 4.5, idx=7)], EVENTS_T)
    out = split_events(events, DS, holdout_days=1)
    assert out.columns == ["user_id", "item_id", "item_idx", "event_type", "ts", "rating", "split"]
    assert [tuple(r) for r in out.collect()][0][:3] == ("u1", "a", 7)


def test_leave_one_out_split(spark):
    events = spark.createDataFrame(
        [
            ev("u1", "a", "view", ts(20)),
            ev("u1", "b", "view", ts(21)),
            ev("u1", "c", "view", ts(22)),
            ev("u1", "c", "purchase", ts(22)),  # same ts as the view: later in the funnel, so last
            ev("u2", "a", "view", ts(20)),  # two events only: both train
            ev("u2", "b", "view", ts(21)),
            ev("u3", "a", "view", ts(20)),
            ev("u3", "b", "view", ts(20)),  # same ts and type: item_id breaks the tie
            ev("u3", "c", "view", ts(19)),
        ],
        EVENTS_T,
    )
    got = sorted((r.user_id, r.item_id, r.event_type, r.split) for r in split_events(events, DS, 1, "loo").collect())
    assert got == [
        ("u1", "a", "view", "train"),
        ("u1", "b", "view", "train"),
        ("u1", "c", "purchase", "test"),
        ("u1", "c", "view", "valid"),
        ("u2", "a", "view", "train"),
        ("u2", "b", "view", "train"),
        ("u3", "a", "view", "valid"),
        ("u3", "b", "view", "test"),
        ("u3", "c", "view", "train"),
    ]


def test_unknown_split_mode_is_refused(spark):
    events = spark.createDataFrame([], EVENTS_T)
    with pytest.raises(ValueError, match="split mode 'random'"):
        split_events(events, DS, 1, "random")


# --- sequences -------------------------------------------------------------------------------


def test_sequences_are_time_ordered_and_truncated(spark):
    events = spark.createDataFrame(
        [
            ev("u1", "e", "view", ts(25), idx=4),
            ev("u1", "a", "view", ts(20), idx=0),
            ev("u1", "c", "click", ts(22), idx=2),
            ev("u1", "b", "view", ts(22), idx=1),  # same ts as the click: view comes first
            ev("u1", "d", "purchase", ts(23), idx=3),
            ev("u2", "a", "rating", ts(21), 3.0, idx=0),
        ],
        EVENTS_T,
    )
    rows = {r.user_id: r for r in build_sequences(events, max_seq_len=3).collect()}
    assert rows["u1"].item_idxs == [2, 3, 4]
    assert rows["u1"].event_types == ["click", "purchase", "view"]
    assert [as_utc(t) for t in rows["u1"].ts] == [ts(22), ts(23), ts(25)]
    assert rows["u1"].n_events == 5
    assert (rows["u2"].item_idxs, rows["u2"].event_types, rows["u2"].n_events) == ([0], ["rating"], 1)


def test_sequence_tie_order_with_room_for_all(spark):
    events = spark.createDataFrame(
        [
            ev("u1", "c", "click", ts(22), idx=2),
            ev("u1", "b", "view", ts(22), idx=1),
            ev("u1", "a", "view", ts(22), idx=0),
        ],
        EVENTS_T,
    )
    (row,) = build_sequences(events, max_seq_len=50).collect()
    assert (row.item_idxs, row.event_types) == ([0, 1, 2], ["view", "view", "click"])


# --- item map --------------------------------------------------------------------------------


def test_item_map_appends_new_items_in_created_order(spark):
    catalogue = spark.createDataFrame(
        [
            ("x", "t", None, "c", 1.0, ts(1), True),
            ("n2", "t", None, "c", 1.0, ts(26), True),
            ("n1", "t", None, "c", 1.0, ts(26), True),  # same created_at as n2: item_id orders
            ("old", "t", None, "c", 1.0, ts(1, month=10), True),  # older, but new to the map
        ],
        CATALOGUE_T,
    )
    previous = spark.createDataFrame(
        [("x", 0, dt.date(2026, 11, 1)), ("gone", 1, dt.date(2026, 11, 1))], ITEM_MAP_SCHEMA
    )
    got = sorted(tuple(r) for r in build_item_map(catalogue, previous, DS).collect())
    assert got == [
        ("gone", 1, dt.date(2026, 11, 1)),
        ("n1", 3, DS),
        ("n2", 4, DS),
        ("old", 2, DS),
        ("x", 0, dt.date(2026, 11, 1)),
    ]
    first_night = sorted(tuple(r) for r in build_item_map(catalogue, None, DS).collect())
    assert first_night == [("n1", 2, DS), ("n2", 3, DS), ("old", 0, DS), ("x", 1, DS)]


# --- stats -----------------------------------------------------------------------------------


def test_item_stats(spark):
    events = spark.createDataFrame(
        [
            ev("u1", "a", "view", ts(27)),
            ev("u2", "a", "view", ts(27)),
            ev("u1", "a", "view", ts(25)),
            ev("u1", "a", "view", ts(10)),
            ev("u1", "a", "click", ts(21)),
            ev("u1", "a", "purchase", ts(21, "13:00")),
            ev("u2", "a", "rating", ts(20), 4.0),
            ev("u3", "b", "click", ts(27, "01:00")),
        ],
        EVENTS_T,
    )
    item_map = spark.createDataFrame([("a", 0, DS), ("b", 1, DS), ("cold", 2, DS)], ITEM_MAP_SCHEMA)
    catalogue = spark.createDataFrame(
        [
            ("a", "t", None, "c", 1.0, ts(1, "23:00"), True),
            ("b", "t", None, "c", 1.0, ts(27, "00:30"), True),
            ("cold", "t", None, "c", 1.0, ts(20), True),
        ],
        CATALOGUE_T,
    )
    rows = {r.item_id: r.asDict() for r in build_item_stats(events, item_map, catalogue, DS).collect()}
    a, b, cold = rows["a"], rows["b"], rows["cold"]
    assert (a["n_view"], a["n_click"], a["n_cart"], a["n_purchase"], a["n_rating"]) == (4, 1, 0, 1, 1)
    assert (a["n_events"], a["n_users"]) == (7, 2)
    assert (a["pop_1d"], a["pop_7d"], a["pop_28d"]) == (2, 5, 7)
    assert (a["ctr"], a["cvr"], a["mean_rating"]) == (0.25, 1.0, 4.0)
    assert (as_utc(a["first_seen"]), as_utc(a["last_seen"])) == (ts(10), ts(27))
    assert (a["age_days"], b["age_days"], cold["age_days"]) == (26, 0, 7)
    assert (b["n_click"], b["ctr"], b["cvr"], b["pop_1d"]) == (1, None, 0.0, 1)
    assert (cold["n_events"], cold["n_users"], cold["pop_28d"], cold["ctr"], cold["first_seen"]) == (
        0,
        0,
        0,
        None,
        None,
    )


def test_user_stats(spark):
    events = spark.createDataFrame(
        [
            ev("u1", "a", "view", ts(20, "10:00"), category="shoes"),
            ev("u1", "a", "purchase", ts(20, "11:00"), category="shoes"),
            ev("u1", "b", "view", ts(22), category="hats"),
            ev("u1", "c", "view", ts(25), category="hats"),  # 2 - 2 tie: the smaller name wins
            ev("u1", "d", "view", ts(26), category=None),
            ev("u2", "d", "view", ts(26), category=None),
        ],
        EVENTS_T,
    )
    rows = {r.user_id: r.asDict() for r in build_user_stats(events).collect()}
    u1, u2 = rows["u1"], rows["u2"]
    assert (u1["n_events"], u1["n_purchases"], u1["active_days"], u1["top_category"]) == (5, 1, 4, "hats")
    assert (as_utc(u1["first_ts"]), as_utc(u1["last_ts"])) == (ts(20, "10:00"), ts(26))
    assert (u2["n_events"], u2["n_purchases"], u2["active_days"], u2["top_category"]) == (1, 0, 1, None)


# --- two nights end to end -------------------------------------------------------------------


def write(folder: Path, schema: pa.Schema, rows: list[tuple]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({f.name: list(c) for f, c in zip(schema, zip(*rows, strict=True), strict=True)}, schema=schema),
        folder / "part-0.parquet",
    )


def test_item_map_is_stable_across_nights(spark, lake_root):
    lake = Lake(lake_root)
    day1, day2 = DS - dt.timedelta(days=1), DS
    cfg = Settings(lake_root=lake_root, history_days=3, holdout_days=1, max_seq_len=2, max_volume_drop=1.0)
    write(
        lake.items_partition(day1),
        ITEMS_SCHEMA,
        [
            ("b", "B", None, "hats", 5.0, ts(20), True),
            ("a", "A", None, "hats", 5.0, ts(20), True),
            ("c", "C", None, "shoes", 5.0, ts(19), True),
            ("cold", "Cold", None, None, 5.0, ts(21), True),  # no events at all: still indexed
        ],
    )
    write(
        lake.events_partition(day1),
        EVENTS_SCHEMA,
        [
            ("u1", "a", "view", ts(26, "09:00"), None),
            ("u1", "b", "click", ts(26, "10:00"), None),
            ("u2", "c", "view", ts(26, "11:00"), None),
        ],
    )
    run_validation(spark, lake, day1, cfg)
    night1 = run_features(spark, lake, day1, cfg)
    map1 = {r["item_id"]: r["item_idx"] for r in pq.read_table(lake.item_map_root / f"ds={day1}").to_pylist()}
    assert map1 == {"c": 0, "a": 1, "b": 2, "cold": 3}
    assert night1["item_map"] == {
        "snapshot": str(lake.item_map_root / f"ds={day1}"),
        "previous": None,
        "items": 4,
        "new_items": 4,
    }

    # Night two: two new items (one with an older created_at) and an update of an old one.
    write(
        lake.items_partition(day2),
        ITEMS_SCHEMA,
        [
            ("d", "D", None, "shoes", 5.0, ts(27), True),
            ("aa", "AA", None, "hats", 5.0, ts(1), True),
            ("a", "A v2", None, "hats", 4.0, ts(20), False),
        ],
    )
    write(
        lake.events_partition(day2),
        EVENTS_SCHEMA,
        [
            ("u1", "d", "purchase", ts(27, "09:00"), None),
            ("u1", "aa", "view", ts(27, "10:00"), None),
            ("u3", "a", "rating", ts(27, "11:00"), 4.0),
        ],
    )
    run_validation(spark, lake, day2, cfg)
    night2 = run_features(spark, lake, day2, cfg)
    rerun = run_features(spark, lake, day2, cfg)  # idempotent: same snapshot, same indices
    assert rerun == night2

    snapshot = pq.read_table(lake.item_map_root / f"ds={day2}").to_pylist()
    assert sorted((r["item_id"], r["item_idx"], r["first_ds"]) for r in snapshot) == [
        ("a", 1, day1),
        ("aa", 4, day2),
        ("b", 2, day1),
        ("c", 0, day1),
        ("cold", 3, day1),
        ("d", 5, day2),
    ]
    assert night2["item_map"]["previous"] == str(lake.item_map_root / f"ds={day1}")
    assert night2["item_map"]["new_items"] == 2

    out = lake.features(day2)
    items = {
        r["item_id"]: (r["item_idx"], r["title"], r["available"]) for r in pq.read_table(out / "items").to_pylist()
    }
    assert items["a"] == (1, "A v2", False)
    assert items["cold"] == (3, "Cold", True)

    events = sorted((r["user_id"], r["item_idx"], r["split"]) for r in pq.read_table(out / "events").to_pylist())
    assert events == [
        ("u1", 1, "valid"),
        ("u1", 2, "valid"),
        ("u1", 4, "test"),
        ("u1", 5, "test"),
        ("u2", 0, "valid"),
        ("u3", 1, "test"),
    ]
    seqs = {
        r["user_id"]: (r["item_idxs"], r["event_types"], r["n_events"])
        for r in pq.read_table(out / "sequences").to_pylist()
    }
    assert seqs == {
        "u1": ([5, 4], ["purchase", "view"], 4),
        "u2": ([0], ["view"], 1),
        "u3": ([1], ["rating"], 1),
    }
    users = {
        r["user_id"]: (r["n_events"], r["n_purchases"], r["active_days"], r["top_category"])
        for r in pq.read_table(out / "user_stats").to_pylist()
    }
    assert users == {"u1": (4, 1, 2, "hats"), "u2": (1, 0, 1, "shoes"), "u3": (1, 0, 1, "hats")}
    stats = {
        r["item_id"]: (r["item_idx"], r["n_events"], r["pop_1d"]) for r in pq.read_table(out / "item_stats").to_pylist()
    }
    assert stats == {"c": (0, 1, 0), "a": (1, 2, 1), "b": (2, 1, 0), "cold": (3, 0, 0), "aa": (4, 1, 1), "d": (5, 1, 1)}

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == night2
    assert manifest["splits"] == {"train": 0, "valid": 3, "test": 3}
    assert {k: v["rows"] for k, v in manifest["outputs"].items()} == {
        "item_map": 6,
        "items": 6,
        "events": 6,
        "sequences": 3,
        "item_stats": 6,
        "user_stats": 3,
    }


def test_missing_validated_input_is_refused(spark, lake_root):
    from recsys.errors import InputError

    with pytest.raises(InputError, match=rf"validated/events/date={DS}: missing; run validation"):
        run_features(spark, Lake(lake_root), DS, Settings(lake_root=lake_root))
