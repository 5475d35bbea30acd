"""spark_jobs/validate.py on tiny hand-written raw partitions (real local Spark, pyarrow files).

Every expected row below is written by hand; none is computed by the code under test.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.config import Settings
from recsys.errors import InputError
from recsys.lake import Lake
from recsys.schema import EVENTS_SCHEMA, ITEMS_SCHEMA
from spark_jobs import io
from spark_jobs.validate import main, run_validation

D = dt.date(2026, 11, 27)  # the run date of most tests
UTC = dt.timezone.utc
NAN = math.nan

# Upstream files can break the declared non-null contract; write them with nullable columns.
EVENTS_LOOSE = pa.schema([f.with_nullable(True) for f in EVENTS_SCHEMA])
ITEMS_LOOSE = pa.schema([f.with_nullable(True) for f in ITEMS_SCHEMA])


def at(day: dt.date, hhmm: str) -> dt.datetime:
    h, m = map(int, hhmm.split(":"))
    return dt.datetime(day.year, day.month, day.day, h, m, tzinfo=UTC)


def write_events(root: Path, day: dt.date, rows: list[tuple], name: str = "part-0.parquet") -> Path:
    """rows: (user_id, item_id, event_type, ts, rating)."""
    cols = list(zip(*rows, strict=True)) if rows else [[]] * 5
    table = pa.table({f.name: list(c) for f, c in zip(EVENTS_SCHEMA, cols, strict=True)}, schema=EVENTS_LOOSE)
    return _write(root / "raw" / "events" / f"date={day}", name, table)


def write_items(root: Path, day: dt.date, rows: list[tuple], name: str = "part-0.parquet") -> Path:
    """rows: (item_id, title, description, category, price, created_at, available)."""
    cols = list(zip(*rows, strict=True))
    table = pa.table({f.name: list(c) for f, c in zip(ITEMS_SCHEMA, cols, strict=True)}, schema=ITEMS_LOOSE)
    return _write(root / "raw" / "items" / f"date={day}", name, table)


def _write(folder: Path, name: str, table: pa.Table) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / name)
    return folder / name


def item(item_id, title="T", price=1.0, created=dt.date(2026, 11, 1), category="c"):
    return (item_id, title, None, category, price, at(created, "00:00"), True)


def read_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def settings(root: Path, **kw) -> Settings:
    base = dict(lake_root=root, history_days=7, max_bad_row_share=1.0, max_volume_drop=1.0)
    return Settings(**{**base, **kw})


# --- one lake holding every row-level problem, validated once --------------------------------


@pytest.fixture(scope="module")
def mixed(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed") / "lake"
    old, new = D - dt.timedelta(days=7), D - dt.timedelta(days=1)
    write_items(
        root,
        old,
        [
            item("i1", title="one"),
            item("i2", title="two", price=2.0),
            item("i3", price=NAN),  # bad_price
            item("i4", price=-5.0),  # bad_price
            item("i5", title=""),  # empty_text
            item("i6", title="six"),
            item("i6", title="six"),  # duplicate_item (same partition)
            (None, "x", None, None, 1.0, at(old, "00:00"), True),  # null_field
        ],
    )
    # A later partition updates i1 (wins) and sends a broken i2 (quarantined; the old i2 stays).
    write_items(root, new, [item("i1", title="one v2"), item("i2", title="two v2", price=-1.0)])
    # A partition after D must be ignored.
    write_items(root, D + dt.timedelta(days=1), [item("i99")])

    write_events(
        root,
        D,
        [
            ("u1", "i1", "view", at(D, "10:00"), None),  # clean
            ("u1", "i1", "view", at(D, "10:00"), None),  # exact_duplicate (same file)
            ("u1", "i2", "rating", at(D, "11:00"), 4.0),  # clean (lowest rating kept)
            ("u1", "i2", "rating", at(D, "11:00"), 5.0),  # duplicate_event
            ("u2", "i1", "like", at(D, "12:00"), None),  # unknown_event_type
            ("u2", "i1", "view", at(new, "23:59"), None),  # ts_outside_partition (day before)
            ("u2", "i1", "view", at(D + dt.timedelta(days=1), "00:00"), None),  # ts_outside_partition
            ("u2", "i9", "view", at(D, "12:00"), None),  # unknown_item (never in catalogue)
            ("u2", "i3", "view", at(D, "12:00"), None),  # unknown_item (quarantined item)
            ("u2", "i99", "view", at(D, "12:00"), None),  # unknown_item (arrives after D)
            ("u3", "i1", "rating", at(D, "13:00"), NAN),  # bad_rating
            ("u3", "i1", "rating", at(D, "13:01"), None),  # bad_rating
            ("u3", "i1", "rating", at(D, "13:02"), 11.0),  # bad_rating
            ("", "i1", "view", at(D, "14:00"), None),  # null_field
            ("u4", None, "view", at(D, "14:00"), None),  # null_field
            ("u4", "i6", "click", at(D, "15:00"), None),  # clean
        ],
    )
    write_events(
        root,
        D,
        [
            ("u1", "i1", "view", at(D, "10:00"), None),  # exact_duplicate (other file)
            ("u5", "i2", "purchase", at(D, "16:00"), None),  # clean
        ],
        name="part-1.parquet",
    )
    report = run_validation(spark, Lake(root), D, settings(root))
    return root, report


def quarantined(root: Path, reason: str) -> set[tuple]:
    rows = read_rows(Lake(root).quarantine(D) / "events")
    return {
        (r["user_id"], r["item_id"], r["event_type"], r["ts"], r["rating"], r["source_file"].rsplit("/", 1)[-1])
        for r in rows
        if r["reason"] == reason
    }


def test_clean_events_are_written_to_the_day_partition(mixed):
    root, _ = mixed
    rows = read_rows(Lake(root).validated_events_partition(D))
    got = sorted((r["user_id"], r["item_id"], r["event_type"], r["ts"], r["rating"]) for r in rows)
    assert got == [
        ("u1", "i1", "view", at(D, "10:00"), None),
        ("u1", "i2", "rating", at(D, "11:00"), 4.0),
        ("u4", "i6", "click", at(D, "15:00"), None),
        ("u5", "i2", "purchase", at(D, "16:00"), None),
    ]


def test_unknown_event_type(mixed):
    assert quarantined(mixed[0], "unknown_event_type") == {("u2", "i1", "like", at(D, "12:00"), None, "part-0.parquet")}


def test_ts_outside_partition(mixed):
    assert quarantined(mixed[0], "ts_outside_partition") == {
        ("u2", "i1", "view", at(D - dt.timedelta(days=1), "23:59"), None, "part-0.parquet"),
        ("u2", "i1", "view", at(D + dt.timedelta(days=1), "00:00"), None, "part-0.parquet"),
    }


def test_unknown_item_includes_quarantined_and_future_items(mixed):
    assert quarantined(mixed[0], "unknown_item") == {
        ("u2", "i9", "view", at(D, "12:00"), None, "part-0.parquet"),
        ("u2", "i3", "view", at(D, "12:00"), None, "part-0.parquet"),
        ("u2", "i99", "view", at(D, "12:00"), None, "part-0.parquet"),
    }


def test_duplicates_keep_one_row(mixed):
    root, _ = mixed
    # Of three identical rows (two files) the one from part-0 is kept; the others are set aside.
    assert quarantined(root, "exact_duplicate") == {
        ("u1", "i1", "view", at(D, "10:00"), None, "part-0.parquet"),
        ("u1", "i1", "view", at(D, "10:00"), None, "part-1.parquet"),
    }
    assert quarantined(root, "duplicate_event") == {("u1", "i2", "rating", at(D, "11:00"), 5.0, "part-0.parquet")}


def test_bad_rating_nan_null_and_out_of_range(mixed):
    got = quarantined(mixed[0], "bad_rating")
    assert {(u, i, t, ts) for u, i, t, ts, _, _ in got} == {
        ("u3", "i1", "rating", at(D, "13:00")),
        ("u3", "i1", "rating", at(D, "13:01")),
        ("u3", "i1", "rating", at(D, "13:02")),
    }
    ratings = sorted(r for *_, r, _ in got if r is not None and not math.isnan(r))
    assert ratings == [11.0]
    assert sum(1 for *_, r, _ in got if r is not None and math.isnan(r)) == 1


def test_null_fields(mixed):
    assert quarantined(mixed[0], "null_field") == {
        ("", "i1", "view", at(D, "14:00"), None, "part-0.parquet"),
        ("u4", None, "view", at(D, "14:00"), None, "part-0.parquet"),
    }


def test_catalogue_checks_and_latest_partition_wins(mixed):
    root, _ = mixed
    lake = Lake(root)
    bad = sorted((r["item_id"] or "", r["reason"]) for r in read_rows(lake.quarantine(D) / "items"))
    assert bad == [
        ("", "null_field"),
        ("i2", "bad_price"),
        ("i3", "bad_price"),
        ("i4", "bad_price"),
        ("i5", "empty_text"),
        ("i6", "duplicate_item"),
    ]
    catalogue = {r["item_id"]: r["title"] for r in read_rows(lake.validated_items(D))}
    assert catalogue == {"i1": "one v2", "i2": "two", "i6": "six"}


def test_report_counts_per_reason_file_and_day(mixed):
    root, report = mixed
    on_disk = json.loads(Lake(root).validation_report(D).read_text())
    assert on_disk == json.loads(json.dumps(report, default=str))
    assert report["status"] == "ok"
    assert (report["rows_in"], report["rows_clean"], report["rows_quarantined"]) == (18, 4, 14)
    assert report["reasons"] == {
        "unknown_item": 3,
        "bad_rating": 3,
        "ts_outside_partition": 2,
        "null_field": 2,
        "exact_duplicate": 2,
        "duplicate_event": 1,
        "unknown_event_type": 1,
    }
    part0 = report["files"][f"raw/events/date={D}/part-0.parquet"]
    part1 = report["files"][f"raw/events/date={D}/part-1.parquet"]
    assert (part0["rows_in"], part0["rows_clean"], part0["rows_quarantined"]) == (16, 3, 13)
    assert (part1["rows_in"], part1["rows_clean"], part1["reasons"]) == (2, 1, {"exact_duplicate": 1})
    assert report["days_validated"] == [str(D)]
    # No raw events before D: the six earlier days of the 7-day window are gaps.
    assert report["gaps"] == [str(D - dt.timedelta(days=k)) for k in range(6, 0, -1)]
    assert report["volume"] == {"today": 4, "previous_day": None, "previous": None, "change": None}
    assert report["items"]["catalogue_items"] == 3
    assert report["items"]["reasons"] == {"bad_price": 3, "duplicate_item": 1, "empty_text": 1, "null_field": 1}


# --- inputs that stop the run ----------------------------------------------------------------


def test_missing_partition_for_ds_names_the_path(spark, lake_root):
    write_items(lake_root, D, [item("i1")])
    write_events(
        lake_root, D - dt.timedelta(days=1), [("u1", "i1", "view", at(D - dt.timedelta(days=1), "10:00"), None)]
    )
    with pytest.raises(InputError, match=rf"raw/events/date={D}: raw events for the run date missing"):
        run_validation(spark, Lake(lake_root), D, settings(lake_root))
    report = json.loads(Lake(lake_root).validation_report(D).read_text())
    assert report["status"] == "failed" and f"raw/events/date={D}" in report["error"]


def test_missing_required_column_names_file_and_column(spark, lake_root):
    write_items(lake_root, D, [item("i1")])
    folder = lake_root / "raw" / "events" / f"date={D}"
    folder.mkdir(parents=True)
    no_ts = pa.table(
        {"user_id": ["u1"], "item_id": ["i1"], "event_type": ["view"], "rating": pa.array([None], pa.float64())}
    )
    pq.write_table(no_ts, folder / "part-7.parquet")
    with pytest.raises(
        InputError, match=rf"raw/events/date={D}/part-7.parquet: schema drift: missing required column ts"
    ):
        run_validation(spark, Lake(lake_root), D, settings(lake_root))


def test_wrong_column_type_names_file_and_column(spark, lake_root):
    write_items(lake_root, D, [item("i1")])
    folder = lake_root / "raw" / "events" / f"date={D}"
    folder.mkdir(parents=True)
    table = pa.table(
        {
            "user_id": ["u1"],
            "item_id": ["i1"],
            "event_type": ["rating"],
            "ts": pa.array([at(D, "10:00")], pa.timestamp("us", tz="UTC")),
            "rating": ["4.5"],
        }
    )
    pq.write_table(table, folder / "part-0.parquet")
    with pytest.raises(
        InputError, match=r"part-0.parquet: schema drift: column rating has type string, expected double"
    ):
        run_validation(spark, Lake(lake_root), D, settings(lake_root))


def test_drifted_catalogue_file_names_file_and_column(spark, lake_root):
    folder = lake_root / "raw" / "items" / f"date={D}"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"item_id": ["i1"], "title": ["t"]}), folder / "part-0.parquet")
    write_events(lake_root, D, [("u1", "i1", "view", at(D, "10:00"), None)])
    with pytest.raises(
        InputError, match=rf"raw/items/date={D}/part-0.parquet: schema drift: missing required column description"
    ):
        run_validation(spark, Lake(lake_root), D, settings(lake_root))


def test_unreadable_file_is_named(spark, lake_root):
    write_items(lake_root, D, [item("i1")])
    write_events(lake_root, D, [("u1", "i1", "view", at(D, "10:00"), None)])
    (lake_root / "raw" / "events" / f"date={D}" / "part-9.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match=rf"raw/events/date={D}/part-9.parquet: unreadable Parquet file"):
        run_validation(spark, Lake(lake_root), D, settings(lake_root))


def test_bad_row_share_over_threshold_fails_after_writing_report(spark, lake_root):
    lake = Lake(lake_root)
    write_items(lake_root, D, [item("i1")])
    rows = [("u1", "i1", "view", at(D, f"10:0{k}"), None) for k in range(7)]
    rows += [("u2", "i1", "view", at(D - dt.timedelta(days=2), f"10:0{k}"), None) for k in range(3)]
    write_events(lake_root, D, rows)
    expected = f"raw/events/date={D}/part-0.parquet: 30% of rows bad (ts_outside_partition: 3) > max_bad_row_share 5%"
    with pytest.raises(InputError) as err:
        run_validation(spark, lake, D, settings(lake_root, max_bad_row_share=0.05))
    assert str(err.value) == expected
    report = json.loads(lake.validation_report(D).read_text())
    assert (report["status"], report["error"]) == ("failed", expected)
    assert report["today"]["reasons"] == {"ts_outside_partition": 3}
    # Bad rows are set aside for inspection; nothing is published as validated.
    assert len(read_rows(lake.quarantine(D) / "events")) == 3
    assert not lake.validated_events_partition(D).exists()
    assert not lake.validated_items(D).exists()


def test_bad_share_over_several_files_lists_each(spark, lake_root):
    write_items(lake_root, D, [item("i1")])
    write_events(lake_root, D, [("u1", "i1", "like", at(D, "10:00"), None), ("u1", "i1", "view", at(D, "10:00"), None)])
    write_events(lake_root, D, [("u1", "i7", "view", at(D, "11:00"), None)], name="part-1.parquet")
    with pytest.raises(InputError) as err:
        run_validation(spark, Lake(lake_root), D, settings(lake_root, max_bad_row_share=0.5))
    assert str(err.value) == (
        f"raw/events/date={D}: 66.7% of rows bad (unknown_event_type: 1; unknown_item: 1) > max_bad_row_share 50%; "
        "by file: part-0.parquet 1 of 2, part-1.parquet 1 of 1"
    )


def test_volume_drop_over_threshold_fails(spark, lake_root):
    lake = Lake(lake_root)
    prev = D - dt.timedelta(days=1)
    write_items(lake_root, prev, [item("i1")])
    write_events(lake_root, prev, [("u1", "i1", "view", at(prev, f"1{k}:00"), None) for k in range(10)])
    run_validation(spark, lake, prev, settings(lake_root))
    write_events(lake_root, D, [("u1", "i1", "view", at(D, "10:00"), None)])
    expected = f"raw/events/date={D}: 1 clean events vs 10 on {prev} (90% drop) > max_volume_drop 50%"
    with pytest.raises(InputError) as err:
        run_validation(spark, lake, D, settings(lake_root, max_volume_drop=0.5))
    assert str(err.value) == expected
    report = json.loads(lake.validation_report(D).read_text())
    assert report["volume"] == {"today": 1, "previous_day": str(prev), "previous": 10, "change": -0.9}
    assert report["error"] == expected
    assert not lake.validated_events_partition(D).exists()


def test_a_day_without_events_fails_naming_its_partition_and_keeps_the_day_before(spark, lake_root):
    lake = Lake(lake_root)
    prev = D - dt.timedelta(days=1)
    write_items(lake_root, prev, [item("i1")])
    write_events(lake_root, prev, [("u1", "i1", "view", at(prev, "10:00"), None)])
    run_validation(spark, lake, prev, settings(lake_root))
    write_events(lake_root, D, [])  # an export that ran and found nothing
    with pytest.raises(InputError, match=rf"^raw/events/date={D}: no event rows for the run date$"):
        run_validation(spark, lake, D, settings(lake_root))
    assert json.loads(lake.validation_report(D).read_text())["status"] == "failed"
    assert not lake.validated_events_partition(D).exists() and lake.validated_events_partition(prev).exists()


def test_volume_rise_passes_a_busy_day_and_fails_a_replayed_export(spark, lake_root):
    lake = Lake(lake_root)
    prev, busy = D - dt.timedelta(days=2), D - dt.timedelta(days=1)
    write_items(lake_root, prev, [item("i1")])
    write_events(lake_root, prev, [("u1", "i1", "view", at(prev, "10:00"), None)])
    run_validation(spark, lake, prev, settings(lake_root))
    ten_times = [(f"u{k}", "i1", "view", at(busy, "10:00"), None) for k in range(10)]
    write_events(lake_root, busy, ten_times)
    run_validation(spark, lake, busy, settings(lake_root))  # the default limit is 20x
    assert lake.validated_events_partition(busy).exists()
    write_events(lake_root, D, [(f"u{k}", "i1", "view", at(D, "10:00"), None) for k in range(110)])
    expected = f"raw/events/date={D}: 110 clean events vs 10 on {busy} (11.0x) > max_volume_rise 10x"
    with pytest.raises(InputError) as err:
        run_validation(spark, lake, D, settings(lake_root, max_volume_rise=10))
    assert str(err.value) == expected
    report = json.loads(lake.validation_report(D).read_text())
    assert report["thresholds"]["max_volume_rise"] == 10 and report["error"] == expected
    assert not lake.validated_events_partition(D).exists()


def test_catch_up_gaps_and_idempotent_rerun(spark, lake_root):
    lake = Lake(lake_root)
    days = {k: D - dt.timedelta(days=k) for k in range(7)}
    write_items(lake_root, days[6], [item("i1")])
    for k, n in ((3, 2), (1, 3), (0, 4)):
        write_events(lake_root, days[k], [("u1", "i1", "view", at(days[k], f"1{j}:00"), None) for j in range(n)])
    cfg = settings(lake_root, history_days=5)

    first = run_validation(spark, lake, days[1], cfg)  # window D-5..D-1
    assert first["days_validated"] == [str(days[3]), str(days[1])]
    assert first["gaps"] == [str(days[5]), str(days[4]), str(days[2])]

    second = run_validation(spark, lake, D, cfg)  # window D-4..D
    assert second["days_validated"] == [str(D)]
    assert second["days_already_validated"] == [str(days[3]), str(days[1])]
    assert second["gaps"] == [str(days[4]), str(days[2])]
    assert second["volume"] == {"today": 4, "previous_day": str(days[1]), "previous": 3, "change": pytest.approx(1 / 3)}

    again = run_validation(spark, lake, D, cfg)
    assert again["rows_clean"] == 4
    assert len(read_rows(lake.validated_events_partition(D))) == 4
    assert len(read_rows(lake.validated_events_partition(days[1]))) == 3


def test_main_runs_from_the_command_line(spark, lake_root, capsys):
    write_items(lake_root, D, [item("i1")])
    write_events(lake_root, D, [("u1", "i1", "view", at(D, "10:00"), None)])
    assert main(["--lake-root", str(lake_root), "--ds", str(D)]) == 0
    assert json.loads(capsys.readouterr().out)["rows_clean"] == 1
    assert main(["--lake-root", str(lake_root), "--ds", str(D + dt.timedelta(days=1))]) == 1
    assert f"raw/events/date={D + dt.timedelta(days=1)}" in capsys.readouterr().err


def test_lake_paths_keep_their_scheme():
    # Path() collapses "s3a://b/x" to "s3a:/b/x"; Hadoop must get the URI back intact.
    remote = Lake(Path("s3a://bucket/lake"))
    assert io.uri(remote.events_partition(D)) == f"s3a://bucket/lake/raw/events/date={D}"
    assert (
        io.display(remote, "s3a://bucket/lake/raw/items/date=2026-11-27/p.parquet")
        == "raw/items/date=2026-11-27/p.parquet"
    )
    local = Lake(Path("/data/lake"))
    assert io.uri(local.validated_items(D)) == f"file:///data/lake/validated/items/ds={D}"
    assert io.location(local.validated_items(D)) == f"/data/lake/validated/items/ds={D}"
    assert (
        io.display(local, f"file:/data/lake/raw/events/date={D}/part-0.parquet")
        == f"raw/events/date={D}/part-0.parquet"
    )


# --- many small day partitions (a multi-year import) -----------------------------------------


def test_footer_fast_path_only_passes_plain_matches(tmp_path):
    """Local footers read with pyarrow: a plain match skips the JVM; anything else goes to Spark."""
    good = write_events(tmp_path, D, [("u1", "i1", "view", at(D, "10:00"), None)])
    assert io._plainly_matches(io.uri(good), io.EVENTS)
    assert io._plainly_matches("file:" + str(good), io.EVENTS)  # Hadoop's spelling of a local path

    naive = pa.schema([f if f.name != "ts" else pa.field("ts", pa.timestamp("us")) for f in EVENTS_SCHEMA])
    as_string = pa.schema([f if f.name != "rating" else pa.field("rating", pa.string()) for f in EVENTS_SCHEMA])
    no_rating = pa.schema([f for f in EVENTS_SCHEMA if f.name != "rating"])
    nanos = pa.schema([f if f.name != "ts" else pa.field("ts", pa.timestamp("ns", tz="UTC")) for f in EVENTS_SCHEMA])
    for name, schema in (("naive", naive), ("string", as_string), ("missing", no_rating), ("nanos", nanos)):
        path = tmp_path / f"{name}.parquet"
        pq.write_table(schema.empty_table(), path, coerce_timestamps=None)
        assert not io._plainly_matches(io.uri(path), io.EVENTS), name
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    assert not io._plainly_matches(io.uri(tmp_path / "broken.parquet"), io.EVENTS)
    assert not io._plainly_matches("s3a://bucket/lake/raw/events/date=2026-11-27/part-0.parquet", io.EVENTS)


def test_many_days_catch_up_writes_one_file_per_day(spark, lake_root):
    lake = Lake(lake_root)
    days = [D - dt.timedelta(days=k) for k in range(39, -1, -1)]
    write_items(lake_root, days[0], [item("i1", created=days[0] - dt.timedelta(days=1))])
    for k, day in enumerate(days):
        write_events(lake_root, day, [("u1", "i1", "view", at(day, "10:00"), None)] * (1 + k % 3))
    # Listed with os.scandir locally; the same folders as Hadoop would list.
    assert list(io.partition_days(spark, lake.raw_events)) == days
    assert io.data_files(spark, lake.events_partition(D)) == [f"file://{lake_root}/raw/events/date={D}/part-0.parquet"]

    report = run_validation(spark, lake, D, settings(lake_root, history_days=40))

    assert report["days_validated"] == [str(d) for d in days]
    # Exact duplicates: one clean row per day, the rest (0, 1, 2 extra rows, 13 times) quarantined.
    assert (report["rows_clean"], report["rows_quarantined"]) == (40, 39)
    for day in days:
        files = [f.name for f in lake.validated_events_partition(day).iterdir() if not f.name.startswith(".")]
        assert len(files) == 1 and files[0].endswith(".parquet"), (day, files)
        assert [r["ts"] for r in read_rows(lake.validated_events_partition(day))] == [at(day, "10:00")]
