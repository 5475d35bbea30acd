"""Validate raw events and the item catalogue for one run date; set bad rows aside.

    spark-submit --master spark://host:7077 spark_jobs/validate.py --lake-root s3a://bucket/lake --ds 2026-11-27

(In-process: `python -m spark_jobs.validate --lake-root var/lake --ds 2026-11-27`.)

Reads `raw/events/date=<ds>` (required) plus every earlier day of the history window that
has a raw partition but no validated one yet (catch-up), and the catalogue as of ds (all
`raw/items/date=<d>` with d <= ds, the latest partition winning per item). Writes:

- `validated/events/date=<day>/`  clean events of each day validated (that day replaced whole)
- `validated/items/ds=<ds>/`      the clean catalogue as of ds
- `quarantine/ds=<ds>/events/`, `.../items/`  bad rows + `reason` + `source_file`
- `runs/ds=<ds>/validate.json`  the report, written before any failure is raised

Each bad row gets the first reason that applies, in this order:
events: null_field, unknown_event_type, ts_outside_partition, bad_rating, unknown_item,
then among the remaining rows exact_duplicate / duplicate_event (one row of each
(user_id, item_id, event_type, ts) is kept); items: null_field, empty_text, bad_price,
duplicate_item (one row per item_id and partition is kept).

A file whose columns are missing or of another type stops the run (InputError naming the
file and column): its rows cannot be judged. So does a bad-row share of day ds above
`max_bad_row_share`, or a drop of ds's clean volume vs the previous validated day above
`max_volume_drop`, or a rise above `max_volume_rise` times it (a replayed or duplicated export,
not a busy day); then nothing is written to `validated/` (the quarantine and report are).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections import defaultdict
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys.config import Settings, load_settings
from recsys.errors import InputError, RecsysError
from recsys.lake import Lake, hadoop_root, parse_ds
from recsys.schema import (
    AVAILABLE,
    CREATED_AT,
    EVENT_TYPE,
    EVENT_TYPES,
    ITEM_ID,
    PRICE,
    RATING,
    RATING_RANGE,
    TITLE,
    TS,
    USER_ID,
)
from recsys.tables import percent
from spark_jobs import io
from spark_jobs.io import DAY, REASON, SOURCE_FILE

# Ratings live on a 0..10 scale at most (stars, half stars, 10-point scales).
RATING_MIN, RATING_MAX = RATING_RANGE
_MICROS_PER_DAY = 86_400_000_000


# --- transforms (pure) ---------------------------------------------------------------------


def _blank(c: Column) -> Column:
    return c.isNull() | (F.trim(c) == "")


def check_events(events: DataFrame, item_ids: DataFrame) -> DataFrame:
    """Add `reason` (null for a clean row) to raw events.

    events: EVENTS columns + `date` (the partition day) + `source_file`.
    item_ids: one column `item_id`, the catalogue as of ds.
    """
    known = item_ids.select(ITEM_ID, F.lit(True).alias("_known"))
    df = events.join(known, on=ITEM_ID, how="left")
    rating = F.col(RATING)
    ts_day = F.floor(F.unix_micros(F.col(TS)) / F.lit(_MICROS_PER_DAY))
    reason = (
        F.when(
            _blank(F.col(USER_ID)) | _blank(F.col(ITEM_ID)) | F.col(EVENT_TYPE).isNull() | F.col(TS).isNull(),
            "null_field",
        )
        .when(~F.col(EVENT_TYPE).isin(*EVENT_TYPES), "unknown_event_type")
        .when(ts_day != F.unix_date(F.col(DAY)), "ts_outside_partition")
        # Spark orders NaN above every number, so the range test alone would catch it; say it anyway.
        .when(F.isnan(rating) | (rating < RATING_MIN) | (rating > RATING_MAX), "bad_rating")
        .when((F.col(EVENT_TYPE) == "rating") & rating.isNull(), "bad_rating")
        .when(F.col("_known").isNull(), "unknown_item")
    )
    df = df.withColumn(REASON, reason)
    # Duplicates only among otherwise clean rows; keep the first by file, then rating.
    key = Window.partitionBy(USER_ID, ITEM_ID, EVENT_TYPE, TS, F.col(REASON).isNull()).orderBy(
        SOURCE_FILE, rating.asc_nulls_last()
    )
    rn, first_rating = F.row_number().over(key), F.first(rating).over(key)
    df = df.withColumn(
        REASON,
        F.when(F.col(REASON).isNotNull(), F.col(REASON))
        .when((rn > 1) & rating.eqNullSafe(first_rating), "exact_duplicate")
        .when(rn > 1, "duplicate_event"),
    )
    return df.select(*events.columns, REASON)


def check_items(items: DataFrame) -> DataFrame:
    """Add `reason` (null for a clean row) to raw catalogue rows (ITEMS + `date` + `source_file`)."""
    price = F.col(PRICE)
    reason = (
        F.when(_blank(F.col(ITEM_ID)) | F.col(CREATED_AT).isNull() | F.col(AVAILABLE).isNull(), "null_field")
        .when(_blank(F.col(TITLE)), "empty_text")
        .when(F.isnan(price) | (price < 0) | (price == float("inf")), "bad_price")
    )
    df = items.withColumn(REASON, reason)
    key = Window.partitionBy(DAY, ITEM_ID, F.col(REASON).isNull()).orderBy(
        SOURCE_FILE, *[F.col(c).asc_nulls_last() for c in items.columns if c not in (DAY, SOURCE_FILE)]
    )
    df = df.withColumn(
        REASON,
        F.when(F.col(REASON).isNotNull(), F.col(REASON)).when(F.row_number().over(key) > 1, "duplicate_item"),
    )
    return df.select(*items.columns, REASON)


def catalogue_as_of(clean_items: DataFrame) -> DataFrame:
    """The catalogue from clean item rows of several partitions: the latest `date` wins per item."""
    latest = Window.partitionBy(ITEM_ID).orderBy(F.col(DAY).desc())
    return clean_items.withColumn("_rn", F.row_number().over(latest)).filter("_rn = 1").select(*io.ITEMS.names)


def reason_counts(checked: DataFrame) -> DataFrame:
    """Rows per (date, source_file, reason); reason null = clean."""
    return checked.groupBy(DAY, SOURCE_FILE, REASON).count()


# --- report helpers (pure Python) ----------------------------------------------------------


def summarise(rows: list[tuple[str, str, str | None, int]], lake: Lake) -> dict[str, Any]:
    """(day, source_file, reason, count) rows -> totals, per reason, per day and per file."""

    def blank() -> dict[str, Any]:
        return {"rows_in": 0, "rows_clean": 0, "rows_quarantined": 0, "reasons": defaultdict(int)}

    total, days, files = blank(), defaultdict(blank), defaultdict(blank)
    for day, source, reason, n in rows:
        name = io.display(lake, source)
        for acc in (total, days[day], files[name]):
            acc["rows_in"] += n
            if reason is None:
                acc["rows_clean"] += n
            else:
                acc["rows_quarantined"] += n
                acc["reasons"][reason] += n
        files[name]["day"] = day

    def plain(acc):
        return {**acc, "reasons": dict(sorted(acc["reasons"].items(), key=lambda kv: (-kv[1], kv[0])))}

    return {
        **plain(total),
        "days": {d: plain(a) for d, a in sorted(days.items())},
        "files": {f: plain(a) for f, a in sorted(files.items())},
    }


def bad_share_message(partition: str, files: dict[str, dict], limit: float) -> str | None:
    """The failure message when the bad share of one day's files exceeds `limit`, else None."""
    rows_in = sum(f["rows_in"] for f in files.values())
    bad = sum(f["rows_quarantined"] for f in files.values())
    if rows_in == 0 or bad / rows_in <= limit:
        return None
    reasons: dict[str, int] = defaultdict(int)
    for f in files.values():
        for r, n in f["reasons"].items():
            reasons[r] += n
    listed = "; ".join(f"{r}: {n:,}" for r, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    culprits = sorted((f for f in files.items() if f[1]["rows_quarantined"]), key=lambda f: -f[1]["rows_quarantined"])
    where = culprits[0][0] if len(culprits) == 1 else partition
    msg = f"{where}: {percent(bad / rows_in)} of rows bad ({listed}) > max_bad_row_share {percent(limit)}"
    if len(culprits) > 1:
        msg += "; by file: " + ", ".join(
            f"{name.rsplit('/', 1)[-1]} {f['rows_quarantined']:,} of {f['rows_in']:,}" for name, f in culprits
        )
    return msg


def volume_message(
    partition: str, today: int, prev_day: dt.date | None, prev: int | None, max_drop: float, max_rise: float
) -> str | None:
    """The failure message when today's clean volume fell more than `max_drop` below the
    previous day's, or is more than `max_rise` times it (0: no limit). A sale or a launch
    multiplies a day by a few; a month of events exported again into one day multiplies it by
    the days of that month."""
    if prev_day is None or not prev:
        return None
    against = f"{partition}: {today:,} clean events vs {prev:,} on {prev_day.isoformat()}"
    drop = 1 - today / prev
    if drop > max_drop:
        return f"{against} ({percent(drop)} drop) > max_volume_drop {percent(max_drop)}"
    if max_rise > 0 and today > max_rise * prev:
        return f"{against} ({today / prev:.1f}x) > max_volume_rise {max_rise:g}x"
    return None


# --- the job (I/O) -------------------------------------------------------------------------


def _events_to_validate(spark: SparkSession, lake: Lake, ds: dt.date, history_days: int):
    """(days to validate, days already validated, gaps) within the history window."""
    window = [ds - dt.timedelta(days=k) for k in range(history_days - 1, -1, -1)]
    raw = io.partition_days(spark, lake.raw_events)
    done = io.partition_days(spark, lake.validated_events)
    todo, already, gaps = [], [], []
    for day in window:
        if day == ds:
            todo.append(day)
        elif day in done:
            already.append(day)
        elif day in raw:
            todo.append(day)
        else:
            gaps.append(day)
    return todo, already, gaps


def _read_raw_events(spark, lake, ds, days):
    files, empty = [], []
    for day in days:
        folder = lake.events_partition(day)
        found = io.data_files(spark, folder)
        if not found and day == ds:
            what = "missing" if not io.exists(spark, folder) else "has no data files"
            raise InputError(f"{io.display(lake, folder)}: raw events for the run date {what}")
        if not found:
            empty.append(day)
        files += found
    io.check_files(spark, lake, files, io.EVENTS)
    df = io.read_partitions(spark, lake.raw_events, files, io.EVENTS)
    return df.select(*io.EVENTS.names, DAY, F.input_file_name().alias(SOURCE_FILE)), files, empty


def _read_raw_items(spark, lake, ds):
    parts = [day for day in io.partition_days(spark, lake.raw_items) if day <= ds]
    files = [f for day in parts for f in io.data_files(spark, lake.items_partition(day))]
    if not files:
        raise InputError(f"{io.display(lake, lake.raw_items)}: no catalogue partition on or before {ds}")
    io.check_files(spark, lake, files, io.ITEMS)
    df = io.read_partitions(spark, lake.raw_items, files, io.ITEMS)
    return df.select(*io.ITEMS.names, DAY, F.input_file_name().alias(SOURCE_FILE)), parts


def run_validation(spark: SparkSession, lake: Lake, ds: dt.date | str, settings: Settings) -> dict[str, Any]:
    """Validate ds (and catch-up days), write clean data, quarantine and report; return the report.

    Raises InputError when input for ds is missing, unreadable, drifted or past a threshold.
    """
    ds = parse_ds(ds)
    try:
        days, already, gaps = _events_to_validate(spark, lake, ds, settings.history_days)
        events, event_files, empty_days = _read_raw_events(spark, lake, ds, days)
        items, item_days = _read_raw_items(spark, lake, ds)
    except InputError as err:
        # Input that can't be read at all still leaves a report saying why.
        report = {"ds": ds.isoformat(), "status": "failed", "error": str(err)}
        io.write_text(spark, lake.validation_report(ds), json.dumps(report, indent=2) + "\n")
        raise
    # A catch-up day whose folder holds no files is a gap like a missing one.
    days = [d for d in days if d not in empty_days]
    gaps = sorted(gaps + empty_days)

    items_checked = check_items(items).persist(StorageLevel.MEMORY_AND_DISK)
    catalogue = catalogue_as_of(items_checked.filter(F.col(REASON).isNull())).persist(StorageLevel.MEMORY_AND_DISK)
    checked = check_events(events, catalogue.select(ITEM_ID)).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return _finish(
            spark, lake, ds, settings, days, already, gaps, event_files, item_days, checked, items_checked, catalogue
        )
    finally:
        for df in (checked, catalogue, items_checked):
            df.unpersist()


def _counts(df: DataFrame) -> list[tuple[str, str, str | None, int]]:
    return [(r[DAY].isoformat(), r[SOURCE_FILE], r[REASON], r["count"]) for r in reason_counts(df).collect()]


def _finish(spark, lake, ds, settings, days, already, gaps, event_files, item_days, checked, items_checked, catalogue):
    ev = summarise(_counts(checked), lake)
    it = summarise(_counts(items_checked), lake)
    n_catalogue = catalogue.count()

    # Files with no rows don't show up in the counts; list them so every file read is accounted for.
    for f in event_files:
        name = io.display(lake, f)
        day = name.split("date=", 1)[-1].split("/", 1)[0]
        ev["files"].setdefault(name, {"rows_in": 0, "rows_clean": 0, "rows_quarantined": 0, "reasons": {}, "day": day})
    today_key = ds.isoformat()
    today = ev["days"].get(today_key, {"rows_in": 0, "rows_clean": 0, "rows_quarantined": 0, "reasons": {}})

    # The previous day with clean events: validated now (catch-up) or on an earlier night.
    earlier = sorted({d for d in days + already if d < ds})
    prev_day, prev = None, None
    if earlier:
        prev_day = earlier[-1]
        if prev_day in days:
            prev = ev["days"].get(prev_day.isoformat(), {}).get("rows_clean", 0)
        else:
            prev = spark.read.schema(io.EVENTS).parquet(io.uri(lake.validated_events_partition(prev_day))).count()

    partition = io.display(lake, lake.events_partition(ds))
    ds_files = {name: f for name, f in ev["files"].items() if name.startswith(partition + "/")}
    failure = None
    if today["rows_in"] == 0:
        failure = f"{partition}: no event rows for the run date"
    failure = failure or bad_share_message(partition, ds_files, settings.max_bad_row_share)
    failure = failure or volume_message(
        partition, today["rows_clean"], prev_day, prev, settings.max_volume_drop, settings.max_volume_rise
    )

    quarantine = lake.quarantine(ds)
    bad_cols = [*io.EVENTS.names, REASON, SOURCE_FILE]
    io.write_parquet(checked.filter(F.col(REASON).isNotNull()).select(*bad_cols), quarantine / "events")
    io.write_parquet(
        items_checked.filter(F.col(REASON).isNotNull()).select(*io.ITEMS.names, REASON, SOURCE_FILE),
        quarantine / "items",
    )
    if failure is None:
        clean = checked.filter(F.col(REASON).isNull())
        io.write_days(
            clean.select(*io.EVENTS.names, DAY),
            lake.validated_events,
            {d: ev["days"].get(d.isoformat(), {}).get("rows_clean", 0) for d in days},
        )
        io.write_parquet(catalogue, lake.validated_items(ds), io.n_files(n_catalogue))

    report = {
        "ds": today_key,
        "status": "failed" if failure else "ok",
        "error": failure,
        **{k: ev[k] for k in ("rows_in", "rows_clean", "rows_quarantined", "reasons")},
        "today": {**today, "bad_share": (today["rows_quarantined"] / today["rows_in"]) if today["rows_in"] else None},
        "volume": {
            "today": today["rows_clean"],
            "previous_day": prev_day.isoformat() if prev_day else None,
            "previous": prev,
            "change": (today["rows_clean"] / prev - 1) if prev else None,
        },
        "days_validated": [d.isoformat() for d in days],
        "days_already_validated": [d.isoformat() for d in already],
        "gaps": [d.isoformat() for d in gaps],
        "days": ev["days"],
        "files": ev["files"],
        "items": {
            "catalogue_items": n_catalogue,
            "partitions": [d.isoformat() for d in item_days],
            **{k: it[k] for k in ("rows_in", "rows_clean", "rows_quarantined", "reasons", "files")},
        },
        "thresholds": {
            "max_bad_row_share": settings.max_bad_row_share,
            "max_volume_drop": settings.max_volume_drop,
            "max_volume_rise": settings.max_volume_rise,
        },
        "outputs": {
            "validated_events": [io.location(lake.validated_events_partition(d)) for d in days] if not failure else [],
            "validated_items": io.location(lake.validated_items(ds)) if not failure else None,
            "quarantine": io.location(quarantine),
        },
    }
    io.write_text(spark, lake.validation_report(ds), json.dumps(report, indent=2, default=str) + "\n")
    if failure:
        raise InputError(failure)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--lake-root", help="lake root (a local path, or s3://bucket/prefix, read as s3a://); default from settings"
    )
    parser.add_argument("--ds", required=True, help="run date, YYYY-MM-DD")
    args = parser.parse_args(argv)

    from spark_jobs.session import get_spark

    try:
        settings = load_settings(lake_root=args.lake_root)
        spark = get_spark(settings.spark_master, app_name="recsys-validate", driver_memory=settings.spark_driver_memory)
        report = run_validation(spark, Lake(hadoop_root(settings.lake_root)), parse_ds(args.ds), settings)
    except RecsysError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({k: report[k] for k in ("ds", "rows_in", "rows_clean", "rows_quarantined", "reasons")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
