"""Publishing under failure, against a real PostgreSQL with real publisher processes.

A publisher runs in its own Python process and is stopped at a known point (the publisher's
on_phase callback, passed inside that process only) and killed with SIGKILL: mid-COPY, or during
validation. Readers must keep seeing the previous complete batch, retention (or the next
publisher of the date) must clean up what the dead one left, and a re-run must complete.
Two publishers of one date: one wins, the other stops with a clear message, no duplicates.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pyarrow.parquet as pq
import pytest

from recsys.bench.publish import make_batch
from recsys.store.migrate import migrate
from recsys.store.publish import PublishConflictError, publish_batch
from recsys.store.retention import apply_retention
from tests.helpers import fresh_database

DS = date(2024, 5, 1)
K = 50
ROOT = Path(__file__).resolve().parents[1]

# The publisher process: publish `path` for `ds`; at the first call of phase `stop_at`, write the
# batch id to `marker`, then wait for the file `go` (forever if it never comes: the test kills it).
PUBLISHER = textwrap.dedent(
    """
    import sys, time
    from datetime import date
    from pathlib import Path
    import recsys.store.publish.load as load
    from recsys.store.publish import publish_batch

    url, path, ds, stop_at, marker, go = sys.argv[1:7]
    load.CHUNK_ROWS = 10_000  # many chunks: the COPY is still open when the hook fires

    def hold(phase, batch_id):
        if phase == stop_at and not Path(marker).exists():
            Path(marker).write_text(str(batch_id))
            while not Path(go).exists():
                time.sleep(0.02)

    result = publish_batch(url, ds=date.fromisoformat(ds), model_version="subprocess", recs_path=path, k=50,
                           on_phase=hold)
    print("published", result.batch_id, result.rows)
    """
)


@pytest.fixture
def db(pg_url):
    url = fresh_database(pg_url)
    migrate(url)
    yield url
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A previous night (500 users) and tonight (2,000 users x 50 = 100k rows) as Parquet."""
    folder = tmp_path_factory.mktemp("recs")
    previous, _ = make_batch(25_000, K, seed=1)
    tonight, _ = make_batch(100_000, K, seed=2)
    pq.write_table(previous, folder / "previous.parquet")
    pq.write_table(tonight, folder / "tonight.parquet")
    return folder / "previous.parquet", folder / "tonight.parquet"


_RUNNING: list = []  # publishers and readers of the current test, stopped whatever happens


@pytest.fixture(autouse=True)
def _stop_everything():
    yield
    while _RUNNING:
        _RUNNING.pop().close()


class Publisher:
    """A publisher process held at `stop_at` until released or killed."""

    def __init__(self, url: str, path: Path, stop_at: str, tmp: Path):
        _RUNNING.append(self)
        self.marker, self.go = tmp / f"held-{uuid.uuid4().hex}", tmp / f"go-{uuid.uuid4().hex}"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, url, str(path), DS.isoformat(), stop_at, str(self.marker), str(self.go)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
        )

    def wait_held(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while not self.marker.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"publisher exited early: {self.proc.communicate()}")
            assert time.monotonic() < deadline, "publisher never reached its stop"
            time.sleep(0.02)
        time.sleep(0.05)  # the id is written before the file is closed
        return int(self.marker.read_text())

    def release(self, timeout: float = 60.0) -> str:
        self.go.write_text("go")
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err
        return out

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        assert self.proc.returncode == -signal.SIGKILL

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


class Readers:
    """Threads reading the serving view until stopped; every read must be one complete batch."""

    def __init__(self, url: str, n: int = 3):
        _RUNNING.append(self)
        self.url, self.stop, self.seen = url, threading.Event(), []
        self.threads = [threading.Thread(target=self._read, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _read(self):
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                self.seen.append(conn.execute(
                    "SELECT batch_id, count(*), count(DISTINCT (user_id, rank)) "
                    "FROM recsys.current_recommendations GROUP BY batch_id"
                ).fetchall())
                time.sleep(0.005)

    def finish(self) -> list:
        self.close()
        return self.seen

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def status(url: str, batch_id: int) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT status, error FROM recsys.batches WHERE batch_id = %s", (batch_id,)).fetchone()


def side_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return sorted(r for (r,) in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'recsys'::regnamespace AND relkind = 'r' "
            "AND relname ~ '_b[0-9]+$'"
        ))


def serving(url: str) -> tuple[int, int]:
    """(batch id, rows) readers see now."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT min(batch_id), count(*) FROM recsys.current_recommendations"
        ).fetchone()
    return row[0], row[1]


def wait_for_backends_to_exit(url: str, application_pids: list[int], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)"
        while conn.execute(alive, (application_pids,)).fetchone()[0]:
            assert time.monotonic() < deadline, "killed publisher's backend never exited"
            time.sleep(0.02)


def wait_for_copy_progress(url: str, timeout: float = 30.0) -> int:
    """The pid of the backend running a COPY in this database, once rows have reached it (bytes
    past the 19-byte binary COPY header; tuples are counted later, as buffered inserts flush)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "SELECT pid, bytes_processed FROM pg_stat_progress_copy "
                "WHERE datname = current_database() AND command = 'COPY FROM'"
            ).fetchall()
            assert len(rows) <= 1, rows
            if rows and rows[0][1] > 19:
                return rows[0][0]
            assert time.monotonic() < deadline, f"no COPY in progress: {rows}"
            time.sleep(0.02)


def _backend_pids(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [p for (p,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'recsys' "
            "AND pid <> pg_backend_pid()"
        )]


def _assert_complete(seen: list, complete: dict[int, int]) -> None:
    assert len(seen) > 5
    for result in seen:
        assert len(result) == 1, result  # never empty, never two batches
        batch_id, rows, distinct = result[0]
        assert rows == distinct == complete[batch_id], (result, complete)


# --------------------------------------------------------------------------- SIGKILL


def test_sigkill_during_copy_keeps_the_previous_batch_and_a_rerun_completes(db, files, tmp_path):
    previous_path, tonight_path = files
    previous = publish_batch(db, ds=DS, model_version="previous", recs_path=previous_path, k=K)
    readers = Readers(db)
    publisher = Publisher(db, tonight_path, "copy", tmp_path)
    killed = publisher.wait_held()
    copying = wait_for_copy_progress(db)  # the server is mid-COPY: rows in, the COPY still open
    assert status(db, killed)[0] == "loading"
    publisher.kill()
    wait_for_backends_to_exit(db, [copying])

    assert serving(db) == (previous.batch_id, previous.rows)
    assert side_tables(db) == [f"recommendation_lists_b{previous.batch_id}"]  # the COPY's table rolled back
    assert status(db, killed)[0] == "loading"  # dead, but nobody has looked yet
    assert apply_retention(db, today=DS, keep_days=7) == [killed]
    assert status(db, killed) == ("dropped", "abandoned while loading; dropped by retention")

    rerun = publish_batch(db, ds=DS, model_version="rerun", recs_path=tonight_path, k=K, expected_users=2_000,
                          expected_rows=100_000)
    _assert_complete(readers.finish(), {previous.batch_id: previous.rows, rerun.batch_id: rerun.rows})
    assert serving(db) == (rerun.batch_id, 100_000)
    assert rerun.replaced_batch_ids == [previous.batch_id]


def test_sigkill_during_validation_keeps_the_previous_batch_retention_drops_the_orphan(db, files, tmp_path):
    previous_path, tonight_path = files
    previous = publish_batch(db, ds=DS, model_version="previous", recs_path=previous_path, k=K)
    readers = Readers(db)
    publisher = Publisher(db, tonight_path, "validating", tmp_path)
    killed = publisher.wait_held()
    assert status(db, killed)[0] == "validating"
    orphan = f"recommendation_lists_b{killed}"
    assert orphan in side_tables(db)  # loaded and committed, not attached
    pids = _backend_pids(db)
    publisher.kill()
    wait_for_backends_to_exit(db, pids)

    assert serving(db) == (previous.batch_id, previous.rows)
    assert apply_retention(db, today=DS, keep_days=7) == [killed]
    assert side_tables(db) == [f"recommendation_lists_b{previous.batch_id}"]
    assert status(db, killed) == ("dropped", "abandoned while validating; dropped by retention")

    rerun = publish_batch(db, ds=DS, model_version="rerun", recs_path=tonight_path, k=K)
    _assert_complete(readers.finish(), {previous.batch_id: previous.rows, rerun.batch_id: rerun.rows})
    assert serving(db) == (rerun.batch_id, 100_000)


def test_a_rerun_right_after_a_kill_cleans_up_the_dead_publisher_itself(db, files, tmp_path):
    previous_path, tonight_path = files
    previous = publish_batch(db, ds=DS, model_version="previous", recs_path=previous_path, k=K)
    publisher = Publisher(db, tonight_path, "validating", tmp_path)
    killed = publisher.wait_held()
    pids = _backend_pids(db)
    publisher.kill()
    wait_for_backends_to_exit(db, pids)

    rerun = publish_batch(db, ds=DS, model_version="rerun", recs_path=tonight_path, k=K)
    assert status(db, killed)[0] == "dropped"
    assert f"cleaned up by batch {rerun.batch_id}" in status(db, killed)[1]
    assert serving(db) == (rerun.batch_id, 100_000)
    assert side_tables(db) == [f"recommendation_lists_b{b}" for b in sorted([previous.batch_id, rerun.batch_id])]


# --------------------------------------------------------------------------- two publishers


def test_two_publishers_of_one_date_one_wins_the_other_stops_clearly(db, files, tmp_path):
    previous_path, tonight_path = files
    first = Publisher(db, tonight_path, "copy", tmp_path)
    first_id = first.wait_held()
    t0 = time.monotonic()
    with pytest.raises(PublishConflictError) as err:
        publish_batch(db, ds=DS, model_version="second", recs_path=previous_path, k=K)
    assert time.monotonic() - t0 < 10
    message = str(err.value)
    assert "\n" not in message
    assert f"another publisher is already publishing {DS} (batch {first_id}, loading since" in message
    assert "this run stopped without changing anything" in message
    assert status(db, err.value.batch_id) == ("failed", message.split(": ", 1)[1])

    out = first.release()
    assert out.startswith(f"published {first_id} 100000")
    assert serving(db) == (first_id, 100_000)
    with psycopg.connect(db) as conn:
        assert conn.execute(
            "SELECT count(*), count(DISTINCT (user_id, rank)) FROM recsys.current_recommendations"
        ).fetchone() == (100_000, 100_000)
        assert conn.execute(
            "SELECT array_agg(status ORDER BY batch_id) FROM recsys.batches WHERE ds = %s", (DS,)
        ).fetchone()[0] == ["published", "failed"]


# --------------------------------------------------------------------------- reader role


def test_a_reader_login_can_only_read_the_views(db, pg_url, files):
    previous_path, _ = files
    publish_batch(db, ds=DS, model_version="m", recs_path=previous_path, k=K)
    login = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {login} LOGIN IN ROLE recsys_reader")
    netloc = db.split("://", 1)[1].split("@", 1)[1]
    url = f"postgresql://{login}@{netloc}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            user = conn.execute("SELECT user_id FROM recsys.current_recommendations LIMIT 1").fetchone()[0]
            assert len(conn.execute(
                "SELECT item_id FROM recsys.current_recommendations WHERE user_id = %s", (user,)
            ).fetchall()) == K
            for sql in [
                "INSERT INTO recsys.batches (ds) VALUES ('2024-01-01')",
                "INSERT INTO recsys.recommendation_lists VALUES (1, 'u', 'i', '{1}', NULL)",
                "UPDATE recsys.batches SET status = 'failed'",
                "UPDATE recsys.recommendation_lists SET item_ids = 'x'",
                "DELETE FROM recsys.recommendation_lists",
                "DELETE FROM recsys.batches",
                "DROP TABLE recsys.recommendation_lists",
                "DROP VIEW recsys.current_recommendations",
                "DROP SCHEMA recsys CASCADE",
            ]:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(sql)
        assert serving(db)[1] == 25_000
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {login}")
