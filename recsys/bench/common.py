"""What every benchmark shares: a throw-away PostgreSQL, timing, and the output format."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from recsys.tables import text_table

log = logging.getLogger("recsys.bench")


@contextlib.contextmanager
def scratch_database(keep: bool = False) -> Iterator[tuple[str, Path]]:
    """A migrated database on an embedded PostgreSQL in a new temporary folder: (url, folder).

    Never the project's own server: the folder and the server go away afterwards (unless `keep`).
    """
    import psycopg

    from recsys.store.embedded import ensure_server, stop_server
    from recsys.store.migrate import migrate

    root = Path(tempfile.mkdtemp(prefix="recsys-bench-"))
    try:
        base = ensure_server(root / "pg")
        name = "bench_" + uuid.uuid4().hex[:8]
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = base.replace("/recsys?", f"/{name}?", 1)
        migrate(url)
        yield url, root
    finally:
        if not keep:
            with contextlib.suppress(Exception):
                stop_server(root / "pg")
            shutil.rmtree(root, ignore_errors=True)


def timed(fn: Callable[[], object], label: str | None = None) -> tuple[float, object]:
    """(seconds, result) of fn(); with a label, one progress line when it is done."""
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    if label:
        log.info("%s: %.3f s", label, seconds)
    return seconds, out


def machine() -> str:
    """One line naming the machine: CPU model, cores, memory, OS."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    load = ""
    with contextlib.suppress(OSError):
        load = f", load average {os.getloadavg()[0]:.1f} at start"
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}{load}"


def table(rows: list[tuple], header: tuple) -> str:
    return text_table([[_fmt(c) for c in r] for r in rows], [str(h) for h in header])


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def emit(report: str, result: dict) -> dict:
    """Print the human table, then the result as one JSON object on the last line."""
    print(report)
    print(json.dumps(result))
    return result


def run_worker(module: str, args: list[str], env: dict | None = None, every: float = 0.05) -> dict:
    """`python -m module args` in a fresh process, its peak memory sampled every `every` seconds:
    the JSON object its last stdout line holds, plus `wall` (seconds) and `peak_rss` (bytes, the
    whole process tree: a Spark JVM or torch workers count). RuntimeError with its stderr's tail
    when it fails."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    ps, peak, done = psutil.Process(proc.pid), 0, threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, _tree_rss(ps))
            except psutil.Error:
                pass
            done.wait(every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker {module} {' '.join(args[:2])} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {**json.loads(stdout.strip().splitlines()[-1]), "wall": wall, "peak_rss": peak}


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total
