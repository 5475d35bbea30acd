"""`recsys bench readers`: top-K lookup latency with many concurrent readers, idle and while batches publish.

Readers are threads spread over a few processes (apps run elsewhere; one process would measure
its own GIL). Each holds one connection and loops: a random user, the downstream query
`sql/queries/top_k_for_user.sql`, fetch. A read is partial unless it returns exactly K rows
ranked 1..K, all from one batch (every user has K items in every batch published here).
First the readers run alone (idle), then the main process publishes the same-size batch again
and again (each publish replaces the last one); latencies are split by whether the query started
inside a publish, switch included.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from datetime import date

import numpy as np
import pyarrow.parquet as pq

from recsys.bench.common import emit, machine, scratch_database, table
from recsys.bench.publish import make_batch

log = logging.getLogger("recsys.bench")

DS = date(2030, 1, 1)
PER_PROCESS = 10


def _reader_process(url: str, users: int, k: int, threads: int, stop, ready, out, seed: int) -> None:
    import psycopg

    from recsys.store.db import read_query

    query = read_query("top_k_for_user").rstrip().rstrip(";")
    # The app's query, wrapped to tell a complete list: K distinct ranks from 1 to K.
    wrapped = f"SELECT count(*), count(DISTINCT rank), min(rank), max(rank) FROM ({query}) AS q"
    results: list[tuple[float, float, int]] = []
    lock = threading.Lock()

    def loop(n: int) -> None:
        rng = np.random.default_rng(seed * 1000 + n)
        local = []
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(wrapped, {"user_id": "u00000000", "k": k}).fetchall()  # connected, plan cached
            ready.release()
            while not stop.is_set():
                user = f"u{int(rng.integers(users)):08d}"
                t0 = time.monotonic()
                count, distinct, low, high = conn.execute(wrapped, {"user_id": user, "k": k}).fetchone()
                t1 = time.monotonic()
                local.append((t0, t1 - t0, int(not (count == distinct == k and low == 1 and high == k))))
        with lock:
            results.extend(local)

    pool = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put(np.array(results, dtype=np.float64).reshape(-1, 3))


def run(rows: int = 1_000_000, readers: int = 50, k: int = 50, idle_s: float = 5.0, publishes: int = 3) -> dict:
    from recsys.store.publish import publish_batch
    from recsys.store.retention import apply_retention

    host = machine()  # before the run loads the machine itself
    rows -= rows % k
    users = rows // k
    with scratch_database() as (url, root):
        paths = []
        for seed in (1, 2):
            batch, items = make_batch(rows, k, seed=seed)
            paths.append(root / f"recs{seed}.parquet")
            pq.write_table(batch, paths[-1])
        publish_batch(url, ds=DS, model_version="bench-0", recs_path=paths[0], k=k)

        ctx = mp.get_context("spawn")
        stop, ready, out = ctx.Event(), ctx.Semaphore(0), ctx.Queue()
        procs = []
        left = readers
        for p in range((readers + PER_PROCESS - 1) // PER_PROCESS):
            n = min(PER_PROCESS, left)
            left -= n
            procs.append(ctx.Process(target=_reader_process, args=(url, users, k, n, stop, ready, out, p)))
        for proc in procs:
            proc.start()
        for _ in range(readers):
            if not ready.acquire(timeout=120):
                raise RuntimeError("readers did not connect within 2 minutes")
        t_idle = time.monotonic()
        time.sleep(idle_s)
        windows = []
        for n in range(publishes):
            t0 = time.monotonic()
            publish_batch(url, ds=DS, model_version=f"bench-{n + 1}", recs_path=paths[(n + 1) % 2], k=k,
                          known_items=items, expected_users=users, expected_rows=rows)
            windows.append((t0, time.monotonic()))
            log.info("publish %d/%d while reading: %.1f s", n + 1, publishes, windows[-1][1] - t0)
            apply_retention(url, today=DS, keep_days=7)  # between publishes, as the nightly DAG does
            time.sleep(0.5)
        stop.set()
        samples = np.concatenate([out.get(timeout=120) for _ in procs])
        for proc in procs:
            proc.join(timeout=60)

    start, latency, partial = samples[:, 0], samples[:, 1] * 1000, samples[:, 2]
    during = np.zeros(len(start), dtype=bool)
    for a, b in windows:
        during |= (start >= a) & (start <= b)
    idle = (start >= t_idle) & (start < t_idle + idle_s)
    publish_s = sum(b - a for a, b in windows)

    def stats(mask):
        lat = latency[mask]
        if not len(lat):
            return 0, float("nan"), float("nan"), float("nan")
        return int(mask.sum()), float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), float(lat.max())

    n_idle, p50_idle, p99_idle, max_idle = stats(idle)
    n_pub, p50_pub, p99_pub, max_pub = stats(during)
    lines = [
        ("idle (no publish)", n_idle, n_idle / idle_s, p50_idle, p99_idle, max_idle),
        (f"during {publishes} publishes", n_pub, n_pub / publish_s, p50_pub, p99_pub, max_pub),
    ]
    report = "\n".join(
        [
            f"readers benchmark: {readers} concurrent readers ({len(procs)} processes), top-{k} of a random user, "
            f"batches of {rows:,} rows ({users:,} users); {publishes} publishes took {publish_s:.1f}s",
            f"machine: {host}",
            "",
            table(lines, ("phase", "reads", "reads/s", "p50 ms", "p99 ms", "max ms")),
            "",
            f"partial reads (not exactly {k} rows ranked 1..{k}): {int(partial.sum())} of {len(partial):,}",
        ]
    )
    return emit(
        report,
        {
            "readers": readers, "rows": rows, "reads": int(len(partial)), "partial_reads": int(partial.sum()),
            "idle_p50_ms": round(p50_idle, 2), "idle_p99_ms": round(p99_idle, 2),
            "publish_p50_ms": round(p50_pub, 2), "publish_p99_ms": round(p99_pub, 2), "publishes": publishes,
        },
    )
