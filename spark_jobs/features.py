"""Build one night's features from validated events and the validated catalogue.

    spark-submit --master spark://host:7077 spark_jobs/features.py --lake-root s3a://bucket/lake --ds 2026-11-27

(In-process: `python -m spark_jobs.features --lake-root var/lake --ds 2026-11-27`; add
`--split-mode loo` for the leave-one-out protocol of public benchmarks.)

Reads `validated/events/date=<d>` for d in [ds - history_days + 1, ds] and
`validated/items/ds=<ds>` (both written by spark_jobs/validate.py). Writes, under
`features/ds=<ds>/`: item_map, items, events, sequences, item_stats, user_stats and
manifest.json (last, so its presence marks a complete set), plus the item-map snapshot
`features/item_map/ds=<ds>/`. See docs/FEATURES.md for every column.

Item indices are stable across nights: the latest snapshot before ds is kept as is and
catalogue items it lacks are appended in (created_at, item_id) order. Rerunning a date
reads the same earlier snapshot, so it rewrites the same indices.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.config import Settings, load_settings
from recsys.errors import InputError, RecsysError
from recsys.lake import Lake, hadoop_root, parse_ds
from recsys.schema import (
    CATEGORY,
    CREATED_AT,
    EVENT_TYPE,
    EVENT_TYPES,
    ITEM_ID,
    ITEM_IDX,
    RATING,
    SPLIT,
    TS,
    USER_ID,
)
from spark_jobs import io

FIRST_DS = "first_ds"
SPLIT_MODES = ("temporal", "loo")
# Popularity windows in days, ending on ds.
POPULARITY_DAYS = (1, 7, 28)
# Leave-one-out needs a train, a valid and a test event; shorter histories all train (as SASRec).
LOO_MIN_EVENTS = 3

ITEM_MAP_SCHEMA = T.StructType(
    [
        T.StructField(ITEM_ID, T.StringType()),
        T.StructField(ITEM_IDX, T.IntegerType()),
        T.StructField(FIRST_DS, T.DateType()),
    ]
)
EVENT_COLUMNS = (USER_ID, ITEM_ID, ITEM_IDX, EVENT_TYPE, TS, RATING)


def _midnight(day: dt.date) -> Column:
    """UTC midnight starting `day`, as a timestamp literal (independent of the session time zone)."""
    return F.lit(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc))


def _epoch_day(c: Column) -> Column:
    """Days since 1970-01-01 of a timestamp, in UTC whatever the session time zone."""
    return F.floor(F.unix_seconds(c) / F.lit(86_400)).cast("int")


def type_rank() -> Column:
    """Funnel position of the event type (view=1 ... rating=5): the tie-break for equal timestamps."""
    return F.array_position(F.array(*[F.lit(t) for t in EVENT_TYPES]), F.col(EVENT_TYPE))


def _newest_first() -> list[Column]:
    """Interaction order, newest first: ts, then funnel position, then item_id."""
    return [F.col(TS).desc(), type_rank().desc(), F.col(ITEM_ID).desc()]


# --- transforms (pure) ---------------------------------------------------------------------


def build_item_map(catalogue: DataFrame, previous: DataFrame | None, ds: dt.date) -> DataFrame:
    """item_id -> dense 0-based item_idx: every mapping of `previous` kept, catalogue items it
    lacks appended in (created_at, item_id) order with first_ds = ds."""
    if previous is None:
        previous = catalogue.sparkSession.createDataFrame([], ITEM_MAP_SCHEMA)
    previous = previous.select(ITEM_ID, ITEM_IDX, FIRST_DS)
    base = previous.agg(F.coalesce(F.max(ITEM_IDX) + 1, F.lit(0)).alias("_base"))
    new = catalogue.select(ITEM_ID, CREATED_AT).join(previous.select(ITEM_ID), ITEM_ID, "left_anti")
    # One ordered window over the new items only (a night's additions; the whole catalogue on night one).
    order = Window.orderBy(CREATED_AT, ITEM_ID)
    new = new.crossJoin(base).select(
        ITEM_ID,
        (F.col("_base") + F.row_number().over(order) - 1).cast("int").alias(ITEM_IDX),
        F.lit(ds).cast("date").alias(FIRST_DS),
    )
    return previous.unionByName(new)


def attach_items(events: DataFrame, item_map: DataFrame, catalogue: DataFrame) -> DataFrame:
    """Events + item_idx + category; events on items without an index are dropped.

    The per-item keys are broadcast: a catalogue is orders of magnitude smaller than its
    events, but without statistics Spark estimates a join's size as the product of its
    inputs and would broadcast the events instead.
    """
    keys = item_map.select(ITEM_ID, ITEM_IDX).join(catalogue.select(ITEM_ID, CATEGORY), ITEM_ID, "left")
    return events.join(F.broadcast(keys), ITEM_ID, "inner")


def split_events(
    events: DataFrame, ds: dt.date, holdout_days: int, mode: str = "temporal", valid_days: int | None = None
) -> DataFrame:
    """Events (with item_idx) + `split`.

    temporal: 'test' = the last `holdout_days` days up to ds, 'valid' = the `valid_days`
    (default `holdout_days`) days before those, 'train' = older.
    loo: per user, the last interaction is 'test', the one before 'valid', the rest 'train';
    users with fewer than 3 interactions are all 'train'.
    """
    if mode == "temporal":
        test_from = _midnight(ds - dt.timedelta(days=holdout_days - 1))
        valid_from = _midnight(ds - dt.timedelta(days=holdout_days + (valid_days or holdout_days) - 1))
        split = F.when(F.col(TS) >= test_from, "test").when(F.col(TS) >= valid_from, "valid").otherwise("train")
    elif mode == "loo":
        user = Window.partitionBy(USER_ID)
        rn = F.row_number().over(user.orderBy(*_newest_first()))
        n = F.count(F.lit(1)).over(user)
        split = F.when(n < LOO_MIN_EVENTS, "train").when(rn == 1, "test").when(rn == 2, "valid").otherwise("train")
    else:
        raise ValueError(f"split mode {mode!r} is not one of {SPLIT_MODES}")
    return events.select(*EVENT_COLUMNS, split.alias(SPLIT))


def build_sequences(events: DataFrame, max_seq_len: int) -> DataFrame:
    """Per user, the last `max_seq_len` interactions oldest first, and the user's total count.

    Order: ts, then funnel position of the event type, then item_id (so ties are stable).
    One aggregation, no window: each user's steps are collected (partially, before the
    shuffle), sorted as an array and cut to the last `max_seq_len`, so the events are never
    sorted as a whole.
    """
    step = F.struct(F.col(TS), type_rank().alias("_rank"), F.col(ITEM_ID), F.col(ITEM_IDX), F.col(EVENT_TYPE))
    per_user = events.groupBy(USER_ID).agg(F.sort_array(F.collect_list(step)).alias("_all"))
    n = F.size("_all")
    recent = F.slice("_all", F.greatest(n - F.lit(max_seq_len) + 1, F.lit(1)), F.lit(max_seq_len))
    seq = per_user.select(USER_ID, recent.alias("_seq"), n.cast("long").alias("n_events"))
    return seq.select(
        USER_ID,
        F.col("_seq")[ITEM_IDX].alias("item_idxs"),
        F.col("_seq")[EVENT_TYPE].alias("event_types"),
        F.col("_seq")[TS].alias("ts"),
        "n_events",
    )


def build_item_stats(events: DataFrame, item_map: DataFrame, catalogue: DataFrame, ds: dt.date) -> DataFrame:
    """One row per mapped item (zeros for items without events), counts over the events given."""
    is_type = {t: F.col(EVENT_TYPE) == t for t in EVENT_TYPES}
    since = {d: _midnight(ds - dt.timedelta(days=d - 1)) for d in POPULARITY_DAYS}
    agg = events.groupBy(ITEM_ID).agg(
        *[F.count(F.when(is_type[t], 1)).alias(f"n_{t}") for t in EVENT_TYPES],
        F.count(F.lit(1)).alias("n_events"),
        F.countDistinct(USER_ID).alias("n_users"),
        *[F.count(F.when(F.col(TS) >= since[d], 1)).alias(f"pop_{d}d") for d in POPULARITY_DAYS],
        F.avg(RATING).alias("mean_rating"),
        F.min(TS).alias("first_seen"),
        F.max(TS).alias("last_seen"),
    )
    counts = [f"n_{t}" for t in EVENT_TYPES] + ["n_events", "n_users"] + [f"pop_{d}d" for d in POPULARITY_DAYS]
    ds_day = (ds - dt.date(1970, 1, 1)).days
    df = (
        item_map.select(ITEM_ID, ITEM_IDX)
        .join(agg, ITEM_ID, "left")
        .join(catalogue.select(ITEM_ID, CREATED_AT), ITEM_ID, "left")
    )

    def ratio(num: str, den: str) -> Column:
        return F.when(F.col(den) > 0, F.col(num) / F.col(den))

    return df.select(
        ITEM_ID,
        ITEM_IDX,
        *[F.coalesce(F.col(c), F.lit(0)).cast("long").alias(c) for c in counts],
        ratio("n_click", "n_view").alias("ctr"),
        ratio("n_purchase", "n_click").alias("cvr"),
        "mean_rating",
        "first_seen",
        "last_seen",
        (F.lit(ds_day) - _epoch_day(F.col(CREATED_AT))).alias("age_days"),
    )


def build_user_stats(events: DataFrame) -> DataFrame:
    """One row per user with events; `events` carries each item's `category` (attach_items).

    top_category: the category with most interactions, ties to the smallest name; null
    when none of the user's items has a category.
    """
    per_cat = events.groupBy(USER_ID, CATEGORY).agg(
        F.count(F.lit(1)).alias("_n"),
        F.count(F.when(F.col(EVENT_TYPE) == "purchase", 1)).alias("_p"),
        F.min(TS).alias("_first"),
        F.max(TS).alias("_last"),
        F.collect_set(_epoch_day(F.col(TS))).alias("_days"),
    )
    rank = F.when(F.col(CATEGORY).isNotNull(), F.struct((-F.col("_n")).alias("n"), F.col(CATEGORY).alias("c")))
    return per_cat.groupBy(USER_ID).agg(
        F.sum("_n").cast("long").alias("n_events"),
        F.sum("_p").cast("long").alias("n_purchases"),
        F.min("_first").alias("first_ts"),
        F.max("_last").alias("last_ts"),
        F.size(F.array_distinct(F.flatten(F.collect_list("_days")))).alias("active_days"),
        F.min_by(CATEGORY, rank).alias("top_category"),
    )


# --- the job (I/O) -------------------------------------------------------------------------


def _previous_map(spark: SparkSession, lake: Lake, ds: dt.date) -> tuple[DataFrame | None, dt.date | None]:
    earlier = [d for d in io.partition_days(spark, lake.item_map_root) if d < ds]
    if not earlier:
        return None, None
    day = earlier[-1]
    return spark.read.schema(ITEM_MAP_SCHEMA).parquet(io.uri(lake.item_map_root / f"ds={day}")), day


def _check_map(spark: SparkSession, lake: Lake, path) -> int:
    """Item count of a written map; InputError if its indices are not dense and unique."""
    row = (
        spark.read.parquet(io.uri(path))
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.countDistinct(ITEM_ID).alias("ids"),
            F.countDistinct(ITEM_IDX).alias("idxs"),
            F.min(ITEM_IDX).alias("lo"),
            F.max(ITEM_IDX).alias("hi"),
        )
        .first()
    )
    n = row["n"]
    if n and not (row["ids"] == row["idxs"] == n and row["lo"] == 0 and row["hi"] == n - 1):
        raise InputError(
            f"{io.display(lake, path)}: item map is not a dense 0..n-1 index "
            f"({n} rows, {row['ids']} ids, {row['idxs']} indices, range {row['lo']}..{row['hi']})"
        )
    return n


def run_features(
    spark: SparkSession, lake: Lake, ds: dt.date | str, settings: Settings, split_mode: str = "temporal"
) -> dict[str, Any]:
    """Write tonight's features under lake.features(ds); return (and write) the manifest."""
    ds = parse_ds(ds)
    if split_mode not in SPLIT_MODES:
        raise ValueError(f"split mode {split_mode!r} is not one of {SPLIT_MODES}")
    out = lake.features(ds)
    manifest_path = out / "manifest.json"
    # A rerun that stops half way must not leave the previous manifest vouching for mixed outputs.
    io.delete(spark, manifest_path)

    window = [ds - dt.timedelta(days=k) for k in range(settings.history_days - 1, -1, -1)]
    present = io.partition_days(spark, lake.validated_events)
    days = [d for d in window if d in present]
    if ds not in present:
        raise InputError(f"{io.display(lake, lake.validated_events_partition(ds))}: missing; run validation for {ds}")
    if not io.exists(spark, lake.validated_items(ds)):
        raise InputError(f"{io.display(lake, lake.validated_items(ds))}: missing; run validation for {ds}")
    events = spark.read.schema(io.EVENTS).parquet(*[io.uri(lake.validated_events_partition(d)) for d in days])
    catalogue = spark.read.schema(io.ITEMS).parquet(io.uri(lake.validated_items(ds)))

    # Item map: write the snapshot, then read it back so later steps don't recompute the ordering.
    previous, previous_ds = _previous_map(spark, lake, ds)
    snapshot = lake.item_map_root / f"ds={ds.isoformat()}"
    io.write_parquet(build_item_map(catalogue, previous, ds), snapshot)
    n_items = _check_map(spark, lake, snapshot)
    n_previous = previous.count() if previous is not None else 0
    item_map = spark.read.schema(ITEM_MAP_SCHEMA).parquet(io.uri(snapshot))

    ev = attach_items(events, item_map, catalogue).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        n_events = ev.count()
        files = io.n_files(n_events)
        paths = {name: out / name for name in ("item_map", "items", "events", "sequences", "item_stats", "user_stats")}
        io.write_parquet(item_map, paths["item_map"], io.n_files(n_items))
        io.write_parquet(
            catalogue.join(item_map.select(ITEM_ID, ITEM_IDX), ITEM_ID, "inner").select(*io.ITEMS.names, ITEM_IDX),
            paths["items"],
            io.n_files(n_items),
        )
        # Each user in one file, in time order: deterministic and cheap for loaders to walk.
        events_out = split_events(ev, ds, settings.holdout_days, split_mode, settings.valid_days)
        io.write_parquet(events_out, paths["events"], files, sort_by=[USER_ID, TS, type_rank(), ITEM_ID])
        io.write_parquet(build_sequences(ev, settings.max_seq_len), paths["sequences"], files)
        io.write_parquet(build_item_stats(ev, item_map, catalogue, ds), paths["item_stats"], io.n_files(n_items))
        io.write_parquet(build_user_stats(ev), paths["user_stats"], files)
    finally:
        ev.unpersist()

    splits = {s: 0 for s in ("train", "valid", "test")}
    for r in spark.read.parquet(io.uri(paths["events"])).groupBy(SPLIT).count().collect():
        splits[r[SPLIT]] = r["count"]
    rows = {name: spark.read.parquet(io.uri(p)).count() for name, p in paths.items() if name != "events"}
    rows["events"] = n_events
    n_read = events.count()
    manifest = {
        "ds": ds.isoformat(),
        "split_mode": split_mode,
        "window": {
            "start": window[0].isoformat(),
            "end": ds.isoformat(),
            "days_with_events": len(days),
            "days_missing": [d.isoformat() for d in window if d not in present],
        },
        "settings": {k: getattr(settings, k) for k in ("history_days", "holdout_days", "valid_days", "max_seq_len")},
        "outputs": {name: {"path": io.location(p), "rows": rows[name]} for name, p in paths.items()},
        "splits": splits,
        "item_map": {
            "snapshot": io.location(snapshot),
            "previous": io.location(lake.item_map_root / f"ds={previous_ds}") if previous_ds else None,
            "items": n_items,
            "new_items": n_items - n_previous,
        },
        "events_read": n_read,
        "events_without_item": n_read - n_events,
    }
    io.write_text(spark, manifest_path, json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--lake-root", help="lake root (a local path, or s3://bucket/prefix, read as s3a://); default from settings"
    )
    parser.add_argument("--ds", required=True, help="run date, YYYY-MM-DD")
    parser.add_argument(
        "--split-mode",
        choices=SPLIT_MODES,
        default="temporal",
        help="temporal (nightly protocol) or loo (leave-one-out, public benchmarks)",
    )
    args = parser.parse_args(argv)

    from spark_jobs.session import get_spark

    try:
        settings = load_settings(lake_root=args.lake_root)
        spark = get_spark(settings.spark_master, app_name="recsys-features", driver_memory=settings.spark_driver_memory)
        lake = Lake(hadoop_root(settings.lake_root))
        manifest = run_features(spark, lake, parse_ds(args.ds), settings, args.split_mode)
    except RecsysError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({name: o["rows"] for name, o in manifest["outputs"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
