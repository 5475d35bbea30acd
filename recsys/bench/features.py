"""`recsys bench features`: the Spark feature job vs the same sequence building in DuckDB, same run.

    python -m recsys.bench.features --events 1000000
    recsys bench features --events 1000000

Steps, on a generated log of about `events` events (30 days; users scaled to reach the count)
in a temporary lake:

1. `spark_jobs/validate.py` for the last day (catches up the whole month): timed, for context;
2. `spark_jobs/features.py`, the full job (item map, events + split, sequences, item and
   user stats): timed;
3. the job's sequence step alone, Spark (`attach_items` + `build_sequences`, written as the job
   writes it) and DuckDB (one SQL statement: the same joins, the same order -- ts, funnel
   position, item_id -- the same last-`max_seq_len` cut), both reading the validated Parquet
   files and the item map the job wrote. Each engine runs in `repeats` processes,
   interleaved; each process runs the step 3 times. "first" is a process's first run (for
   Spark right after writing the job's `events` output, as in the job, whose earlier steps
   warm the JVM), "warm" the best later run (this query's code compiled, caches filled);
   the best process counts. The
   outputs must be identical (checked), to each other and to the job's.

CPU seconds (user + system of the engine's process: the JVM, or the DuckDB process) are
reported next to wall time: on a machine shared with other jobs they vary far less.

Each step runs in its own process, so peak memory is that process tree's resident set
(sampled every 50 ms; for Spark the Python driver plus its JVM). Times exclude starting the
engine (JVM and SparkSession plus the events output; `import duckdb`), reported
separately. Spark runs with the project's session
settings on `local[*]`; DuckDB with its defaults (all cores).

Prints a table, then one JSON line: {"events", "spark_seconds", "duckdb_seconds", "ratio", ...},
where the seconds are the sequence step's first runs and ratio = spark / duckdb; the
`warm_*` and `*cpu_ratio` keys give the same for warm runs and for CPU time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("recsys.bench")

# Events per user over the generator's 30 days with its default behaviour (measured: 69 ± 1).
EVENTS_PER_USER = 69.2
DAYS = 30
END_DATE = dt.date(2026, 11, 27)
# Each sequence worker runs the step this often: the first run meets the engine as the job
# does, the others show it warm (JIT compiled, caches filled).
RUNS_PER_PROCESS = 3


# --- the workers (each runs in its own process) ---------------------------------------------


def _cpu_seconds(jvm: bool) -> float:
    """CPU time (user + system) used so far by this process, or by its JVM child."""
    import psutil

    procs = [p for p in psutil.Process().children(recursive=True) if "java" in p.name()] if jvm else [psutil.Process()]
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs)


def _spark_session():
    from recsys.config import load_settings
    from spark_jobs.session import get_spark

    settings = load_settings()
    t0 = time.perf_counter()
    spark = get_spark(settings.spark_master, app_name="recsys-bench", driver_memory=settings.spark_driver_memory)
    spark.range(1).count()  # the JVM and the session are up
    return spark, settings, time.perf_counter() - t0


def worker_validate(lake_root: Path, ds: dt.date, out: Path) -> dict:
    from recsys.lake import Lake
    from spark_jobs.validate import run_validation

    spark, settings, startup = _spark_session()
    settings = settings.model_copy(update={"lake_root": lake_root})
    t0, c0 = time.perf_counter(), _cpu_seconds(jvm=True)
    report = run_validation(spark, Lake(lake_root), ds, settings)
    return {"seconds": time.perf_counter() - t0, "cpu": _cpu_seconds(jvm=True) - c0, "startup": startup,
            "rows": report["rows_clean"]}  # fmt: skip


def worker_spark_job(lake_root: Path, ds: dt.date, out: Path) -> dict:
    from recsys.lake import Lake
    from spark_jobs.features import run_features

    spark, settings, startup = _spark_session()
    settings = settings.model_copy(update={"lake_root": lake_root})
    t0, c0 = time.perf_counter(), _cpu_seconds(jvm=True)
    manifest = run_features(spark, Lake(lake_root), ds, settings)
    return {"seconds": time.perf_counter() - t0, "cpu": _cpu_seconds(jvm=True) - c0, "startup": startup,
            "rows": manifest["outputs"]["sequences"]["rows"]}  # fmt: skip


def worker_spark_sequences(lake_root: Path, ds: dt.date, out: Path) -> dict:
    """The job's sequence step on its own: read, attach item indices, build, write."""
    from recsys.lake import Lake
    from recsys.schema import ITEM_ID, TS, USER_ID
    from spark_jobs import io
    from spark_jobs.features import ITEM_MAP_SCHEMA, type_rank, attach_items, build_sequences, split_events

    spark, settings, startup = _spark_session()
    lake = Lake(lake_root)
    days = _window(lake, ds, settings.history_days)
    paths = [io.uri(lake.validated_events_partition(d)) for d in days]
    n_events = json.loads((lake.features(ds) / "manifest.json").read_text())["outputs"]["events"]["rows"]

    def inputs():
        events = spark.read.schema(io.EVENTS).parquet(*paths)
        catalogue = spark.read.schema(io.ITEMS).parquet(io.uri(lake.validated_items(ds)))
        item_map = spark.read.schema(ITEM_MAP_SCHEMA).parquet(io.uri(lake.item_map_root / f"ds={ds}"))
        return attach_items(events, item_map, catalogue)

    # In the job, sequences follow the events output in the same JVM: write that first (the
    # same scan, join, split and sorted write), so the JVM is as warm as the job's.
    t0 = time.perf_counter()
    order = [USER_ID, TS, type_rank(), ITEM_ID]
    warm_up = split_events(inputs(), ds, settings.holdout_days, valid_days=settings.valid_days)
    io.write_parquet(warm_up, out.parent / "warm-up", io.n_files(n_events), order)
    startup += time.perf_counter() - t0

    def step():
        seqs = build_sequences(inputs(), settings.max_seq_len)
        io.write_parquet(seqs, out, io.n_files(n_events))

    runs = _runs(step, jvm=True)
    return {**runs, "startup": startup, "rows": spark.read.parquet(io.uri(out)).count()}


def _runs(step, jvm: bool) -> dict:
    """Run `step` RUNS_PER_PROCESS times: the first (wall, CPU) and the best of the others."""
    timings = []
    for _ in range(RUNS_PER_PROCESS):
        t0, c0 = time.perf_counter(), _cpu_seconds(jvm)
        step()
        timings.append((time.perf_counter() - t0, _cpu_seconds(jvm) - c0))
    warm = min(timings[1:]) if len(timings) > 1 else timings[0]
    return {"seconds": timings[0][0], "cpu": timings[0][1], "warm_seconds": warm[0], "warm_cpu": warm[1]}


DUCKDB_SEQUENCES = """
COPY (
    WITH ev AS (
        SELECT e.user_id, e.item_id, m.item_idx, e.event_type, e.ts,
               list_position(['view', 'click', 'cart', 'purchase', 'rating'], e.event_type) AS rank
        FROM read_parquet($events) AS e
        JOIN read_parquet($item_map) AS m USING (item_id)
        LEFT JOIN read_parquet($catalogue) AS c USING (item_id)
    ),
    numbered AS (
        SELECT *,
               row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, rank DESC, item_id DESC) AS rn,
               count(*) OVER (PARTITION BY user_id) AS n_events
        FROM ev
    )
    SELECT user_id,
           list(item_idx ORDER BY ts, rank, item_id) AS item_idxs,
           list(event_type ORDER BY ts, rank, item_id) AS event_types,
           list(ts ORDER BY ts, rank, item_id) AS ts,
           any_value(n_events)::BIGINT AS n_events
    FROM numbered
    WHERE rn <= $max_len
    GROUP BY user_id
) TO '{out}' (FORMAT parquet)
"""


def worker_duckdb_sequences(lake_root: Path, ds: dt.date, out: Path) -> dict:
    from recsys.config import load_settings
    from recsys.lake import Lake

    settings = load_settings()
    lake = Lake(lake_root)
    t0 = time.perf_counter()
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    startup = time.perf_counter() - t0
    days = _window(lake, ds, settings.history_days)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "part-0.parquet"
    params = {
        "events": [str(lake.validated_events_partition(d) / "*.parquet") for d in days],
        "item_map": str(lake.item_map_root / f"ds={ds}" / "*.parquet"),
        "catalogue": str(lake.validated_items(ds) / "*.parquet"),
        "max_len": settings.max_seq_len,
    }
    runs = _runs(lambda: con.execute(DUCKDB_SEQUENCES.format(out=str(target).replace("'", "''")), params), jvm=False)
    rows = con.execute("SELECT count(*) FROM read_parquet($p)", {"p": str(target)}).fetchone()[0]
    return {**runs, "startup": startup, "rows": rows}


WORKERS = {
    "validate": worker_validate,
    "spark-job": worker_spark_job,
    "spark-sequences": worker_spark_sequences,
    "duckdb-sequences": worker_duckdb_sequences,
}


def _window(lake, ds: dt.date, history_days: int) -> list[dt.date]:
    days = [ds - dt.timedelta(days=k) for k in range(history_days - 1, -1, -1)]
    return [d for d in days if lake.validated_events_partition(d).exists()]


# --- the parent: runs each worker, samples its memory --------------------------------------


def run_worker(name: str, lake_root: Path, ds: dt.date, out: Path, env: dict) -> dict:
    """Run one worker in a fresh process; its result plus wall time and peak tree RSS."""
    from recsys.bench.common import run_worker as run_module

    args = ["--worker", name, "--lake-root", str(lake_root), "--ds", ds.isoformat(), "--out", str(out)]
    return run_module("recsys.bench.features", args, env=env)


def _same_sequences(a: Path, b: Path) -> int:
    """Users whose sequences differ between the two outputs (0 = identical)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con.execute(
        """
        SELECT count(*) FROM read_parquet($a) AS x FULL JOIN read_parquet($b) AS y USING (user_id)
        WHERE x.item_idxs IS DISTINCT FROM y.item_idxs OR x.event_types IS DISTINCT FROM y.event_types
           OR x.ts IS DISTINCT FROM y.ts OR x.n_events IS DISTINCT FROM y.n_events
        """,
        {"a": str(a / "*.parquet"), "b": str(b / "*.parquet")},
    ).fetchone()[0]


def run(events: int = 1_000_000, repeats: int = 2, workdir: Path | None = None, keep: bool = False) -> dict:
    from recsys.bench.common import emit, machine, table
    from recsys.data.generate import GenerateConfig, generate

    users = max(100, round(events / EVENTS_PER_USER))
    items = min(50_000, max(1_000, users // 3))
    root = Path(workdir or tempfile.mkdtemp(prefix="recsys-bench-features-"))
    lake_root = root / "lake"
    env = {**os.environ, "RECSYS_LAKE_ROOT": str(lake_root)}
    try:
        t0 = time.perf_counter()
        summary = generate(lake_root, GenerateConfig(n_users=users, n_items=items, days=DAYS, end_date=END_DATE))
        gen_seconds = time.perf_counter() - t0
        ds = END_DATE
        rows = {}
        rows["validate"] = run_worker("validate", lake_root, ds, root / "unused", env)
        rows["spark-job"] = run_worker("spark-job", lake_root, ds, root / "unused", env)
        results: dict[str, list[dict]] = {"spark-sequences": [], "duckdb-sequences": []}
        for rep in range(repeats):
            for name in results:
                results[name].append(run_worker(name, lake_root, ds, root / name, env))
                log.info("run %d/%d, %s: %.1f s", rep + 1, repeats, name, results[name][-1]["seconds"])
        for name, rs in results.items():
            best = min(rs, key=lambda r: r["seconds"])
            warm = min(rs, key=lambda r: r["warm_seconds"])
            rows[name] = {
                **best,
                "warm_seconds": warm["warm_seconds"],
                "warm_cpu": warm["warm_cpu"],
                "peak_rss": max(r["peak_rss"] for r in rs),
            }
        differing = _same_sequences(root / "spark-sequences", root / "duckdb-sequences")
        job_differing = _same_sequences(lake_root / "features" / f"ds={ds}" / "sequences", root / "duckdb-sequences")
        if differing or job_differing:
            raise RuntimeError(f"Spark and DuckDB sequences differ for {differing} (job: {job_differing}) users")
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)

    sp, dk = rows["spark-sequences"], rows["duckdb-sequences"]
    labels = {
        "validate": "Spark validate (context)",
        "spark-job": "Spark features, full job",
        "spark-sequences": "Spark sequences",
        "duckdb-sequences": "DuckDB sequences",
    }
    lines = [
        (labels[k], r["seconds"], r["cpu"], r.get("warm_seconds", ""), r.get("warm_cpu", ""), r["startup"], r["wall"],
         r["peak_rss"] / 2**20, r["rows"])
        for k, r in rows.items()
    ]  # fmt: skip
    report = "\n".join(
        [
            f"feature job vs DuckDB: {summary['events']:,} events, {users:,} users, {items:,} items, {DAYS} days; "
            f"sequence steps: {repeats} processes per engine, interleaved, {RUNS_PER_PROCESS} runs each",
            f"machine: {machine()}",
            f"generated in {gen_seconds:.1f}s",
            "",
            table(
                lines,
                ("step", "first s", "first CPU s", "warm s", "warm CPU s", "engine start s", "process wall s",
                 "peak RSS MiB", "rows out"),
            ),  # fmt: skip
            "",
            f"sequence step, Spark / DuckDB: first run {sp['seconds'] / dk['seconds']:.2f}x wall, "
            f"{sp['cpu'] / dk['cpu']:.2f}x CPU; warm {sp['warm_seconds'] / dk['warm_seconds']:.2f}x wall, "
            f"{sp['warm_cpu'] / dk['warm_cpu']:.2f}x CPU (outputs identical for all {dk['rows']:,} users)",
        ]
    )
    result = {
        "events": summary["events"],
        "spark_seconds": round(sp["seconds"], 2),
        "duckdb_seconds": round(dk["seconds"], 2),
        "ratio": round(sp["seconds"] / dk["seconds"], 2),
        "warm_spark_seconds": round(sp["warm_seconds"], 2),
        "warm_duckdb_seconds": round(dk["warm_seconds"], 2),
        "warm_ratio": round(sp["warm_seconds"] / dk["warm_seconds"], 2),
        "cpu_ratio": round(sp["cpu"] / dk["cpu"], 2),
        "warm_cpu_ratio": round(sp["warm_cpu"] / dk["warm_cpu"], 2),
        "spark_job_seconds": round(rows["spark-job"]["seconds"], 2),
        "validate_seconds": round(rows["validate"]["seconds"], 2),
        "spark_peak_rss_mib": round(sp["peak_rss"] / 2**20),
        "spark_job_peak_rss_mib": round(rows["spark-job"]["peak_rss"] / 2**20),
        "duckdb_peak_rss_mib": round(dk["peak_rss"] / 2**20),
        "users": users,
        "items": items,
    }
    return emit(report, result)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000, help="about this many generated events (default 1000000)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each sequence step; the best counts (default 2)")
    p.add_argument("--workdir", help="keep the scratch lake here instead of a temporary folder")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--lake-root", help=argparse.SUPPRESS)
    p.add_argument("--ds", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        from recsys import runtime

        runtime.configure()
        result = WORKERS[args.worker](Path(args.lake_root), dt.date.fromisoformat(args.ds), Path(args.out))
        print(json.dumps(result))
        return 0
    run(events=args.events, repeats=args.repeats, workdir=Path(args.workdir) if args.workdir else None,
        keep=bool(args.workdir))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
