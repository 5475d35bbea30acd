"""`recsys bench score-spark`: the score stage's two engines on the same saved model and users.

    recsys bench score-spark --model <lake>/models/<version> --users 200000

Each engine runs once, in a fresh process, on the same users: `users` seeded random histories of
HISTORY items over the model's catalogue, each step's behaviour drawn (mostly views), purchases
excluded as by the default RECSYS_EXCLUDE, every item available, top-K with reasons. `local` is
the in-process engine (`recsys.serve.batch.InProcess`, blocks of RECSYS_SCORE_BLOCK_USERS),
`spark` the Spark job (`spark_jobs.score.SparkEngine`) on RECSYS_SPARK_MASTER; on the default
`local[*]` its executors are threads of the driver's own JVM and their Python workers processes
of the same machine, so both engines share the same cores.

Timed: the engine's call alone, as the score stage makes it (for Spark: users to Parquet, the
job, including each Python worker loading the model once, and reading the lists back); the
model's load in the driver and the SparkSession's start are left out (the start is shown).
Memory: the driver's Python process's peak RSS, and the peak RSS of the process's whole tree
(for Spark with the JVM and the executors' Python workers), sampled every 100 ms. The two
engines' lists must be the same: items and reasons exactly, scores within 1e-6.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HISTORY = 10
# Behaviour of each history step: view, click, cart, purchase (schema.EVENT_TYPES order).
EVENT_SHARES = (0.7, 0.2, 0.07, 0.03)
PURCHASE = 3
ENGINES = ("local", "spark")


def synthetic_users(n: int, n_items: int, seed: int = 1):
    from recsys.serve.batch import Users

    rng = np.random.default_rng(seed)
    items = list(rng.integers(0, n_items, (n, HISTORY), dtype=np.int32))
    events = list(rng.choice(len(EVENT_SHARES), size=(n, HISTORY), p=EVENT_SHARES).astype(np.int8))
    return Users(items, events, [np.unique(h[e == PURCHASE]) for h, e in zip(items, events)])


def open_catalogue(n_items: int):
    """Every item available, none new, no categories, ids i0..i{n-1}."""
    from recsys.serve.batch import Catalogue

    return Catalogue(np.array([f"i{i}" for i in range(n_items)]), np.ones(n_items, bool), np.zeros(n_items, bool),
                     np.full(n_items, -1, np.int64), np.zeros(n_items, bool))


def worker(engine_name: str, model_path: str, users: int, k: int, block_users: int, device: str, out: Path) -> dict:
    """One engine on the synthetic users; its lists go to `out` for the parent to compare."""
    from recsys.config import load_settings
    from recsys.models import load_model
    from recsys.scoring import model_width
    from recsys.serve.batch import InProcess, ScoreOptions

    settings = load_settings()
    model = load_model(Path(model_path))
    width = model_width(model)
    cat, batch = open_catalogue(width), synthetic_users(users, width)
    startup = 0.0
    engine = InProcess()
    if engine_name == "spark":
        from spark_jobs.score import SparkEngine
        from spark_jobs.session import get_spark

        t0 = time.perf_counter()
        spark = get_spark(settings.spark_master, app_name="recsys-bench", driver_memory=settings.spark_driver_memory)
        spark.range(1).count()  # the JVM and the session are up
        startup = time.perf_counter() - t0
        engine = SparkEngine(spark)
    opts = ScoreOptions(k=k, block_users=block_users, device=device)
    t0 = time.perf_counter()
    lists = engine.score(Path(model_path), model, cat, batch, opts, out)
    seconds = time.perf_counter() - t0
    np.save(out / f"{engine_name}-items.npy", lists.items)
    np.save(out / f"{engine_name}-scores.npy", lists.scores)
    digest = hashlib.sha256()
    for row in lists.reasons:
        digest.update("\x1f".join(row).encode() + b"\x1e")
    return {"engine": engine_name, "seconds": seconds, "startup": startup, "items": width,
            "driver_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "reasons_sha256": digest.hexdigest(), "rows": int(np.isfinite(lists.scores).sum())}


def run(model_path: str, users: int = 100_000, k: int = 50, block_users: int | None = None,
        device: str = "cpu") -> dict:
    from recsys.bench.common import emit, machine, run_worker, table
    from recsys.config import Settings

    host = machine()
    block = block_users or Settings.model_fields["score_block_users"].default
    res: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="recsys-bench-score-spark-") as tmp:
        for name in ENGINES:
            res[name] = run_worker("recsys.bench.score_spark", ["--worker", name, "--model", model_path, "--users", str(users), "--k", str(k),
                                     "--block-users", str(block), "--device", device, "--out", tmp], every=0.1)
        out = Path(tmp)
        same_items = np.array_equal(np.load(out / "local-items.npy"), np.load(out / "spark-items.npy"))
        a, b = np.load(out / "local-scores.npy"), np.load(out / "spark-scores.npy")
        finite = np.isfinite(a)
        same_scores = np.array_equal(finite, np.isfinite(b)) and np.allclose(a[finite], b[finite], rtol=1e-6, atol=1e-6)
        max_diff = float(np.abs(a[finite] - b[finite]).max()) if finite.any() else 0.0
    same = same_items and same_scores and res["local"]["reasons_sha256"] == res["spark"]["reasons_sha256"]
    if not same:
        raise RuntimeError(f"the engines' lists differ (items equal: {same_items}, scores close: {same_scores})")
    mib = 2**20
    rows = [(name, r["seconds"], users / r["seconds"], r["driver_peak_rss"] / mib, r["peak_rss"] / mib,
             r["startup"]) for name, r in res.items()]
    local, spark = res["local"], res["spark"]
    report = "\n".join([
        f"score engines: {model_path}, {users:,} users x {local['items']:,} items, {HISTORY}-item histories, k {k}, "
        f"block {block} users, device {device}",
        f"machine: {host}",
        "",
        table(rows, ("engine", "seconds", "users/s", "driver peak RSS MiB", "tree peak RSS MiB", "session start s")),
        "",
        f"spark / local: {spark['seconds'] / local['seconds']:.2f}x the time; lists identical "
        f"({local['rows']:,} rows; largest score difference {max_diff:.1e})",
    ])  # fmt: skip
    return emit(report, {
        "model": model_path, "users": users, "items": local["items"], "k": k,
        "local_seconds": round(local["seconds"], 2), "spark_seconds": round(spark["seconds"], 2),
        "local_users_per_s": round(users / local["seconds"]), "spark_users_per_s": round(users / spark["seconds"]),
        "spark_session_seconds": round(spark["startup"], 2),
        "local_driver_rss_mib": round(local["driver_peak_rss"] / mib), "spark_driver_rss_mib": round(spark["driver_peak_rss"] / mib),
        "local_tree_rss_mib": round(local["peak_rss"] / mib), "spark_tree_rss_mib": round(spark["peak_rss"] / mib),
        "max_score_difference": max_diff,
    })  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", choices=ENGINES, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--block-users", type=int, required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    from recsys import runtime

    runtime.configure()
    print(json.dumps(worker(args.worker, args.model, args.users, args.k, args.block_users, args.device, Path(args.out))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
