"""Backfill end to end through real Airflow components on 127.0.0.1.

api-server, scheduler (LocalExecutor, parallelism 2) and dag-processor run as separate
processes with their metadata in a database of the test's embedded PostgreSQL (SQLite refuses
backfill creation under concurrent writers); the test authenticates like a user of the REST API
(POST /auth/token), backfills two days with POST /api/v2/backfills, then the second day again
with reprocess_behavior=completed and checks that its batch was replaced, not duplicated, and
that the first day's batch was left alone.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from recsys.airflow_local import LocalAirflow, postgres_metadata, prepare
from recsys.data.generate import GenerateConfig, generate
from tests.helpers import TINY, fresh_database

pytestmark = pytest.mark.slow
DAG_ID = "recsys_nightly"
K = 5
# Bounds, not expectations: a run takes 1-2 minutes on two busy cores (two Spark JVMs start).
STARTUP_TIMEOUT_S = 240
BACKFILL_TIMEOUT_S = 900
POLL_S = 5


def _dates(end: dt.date) -> list[dt.date]:
    return [end - dt.timedelta(days=1), end]


def _backfill_body(days: list[dt.date], reprocess: str) -> dict:
    # The DAG's runs have logical dates at 02:00 UTC (its cron), and to_date is inclusive:
    # ending at the last day's 02:00 takes that day and not the next.
    return {
        "dag_id": DAG_ID,
        "from_date": f"{days[0].isoformat()}T00:00:00Z",
        "to_date": f"{days[-1].isoformat()}T02:00:00Z",
        # One date after another: each date's champion, item map and catch-up validation
        # build on the dates before it.
        "max_active_runs": 1,
        "reprocess_behavior": reprocess,
        "dag_run_conf": {"top_k": K},
    }


def _fail(af: LocalAirflow, message: str, run_id: str | None = None, task_ids=None) -> None:
    print(af.tail(lines=60))
    print(af.task_logs(DAG_ID, run_id=run_id, task_ids=task_ids, lines=40))
    pytest.fail(message)


def _wait_for_dag(af: LocalAirflow, token: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        af.check_alive()
        if af.api("GET", f"/api/v2/dags/{DAG_ID}", token).status_code == 200:
            errors = af.api("GET", "/api/v2/importErrors", token).json()
            assert errors["total_entries"] == 0, errors
            return
        time.sleep(2)
    _fail(af, f"the dag-processor did not register {DAG_ID} within {STARTUP_TIMEOUT_S}s")


def _runs(af: LocalAirflow, token: str, days: list[dt.date]) -> list[dict]:
    r = af.api(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns", token,
        params={"logical_date_gte": f"{days[0]}T00:00:00Z", "logical_date_lte": f"{days[-1]}T23:59:59Z",
                "order_by": "logical_date"},
    )
    assert r.status_code == 200, r.text
    return r.json()["dag_runs"]


def _wait_for_backfill(af: LocalAirflow, token: str, backfill_id: int, days: list[dt.date]) -> list[dict]:
    """Poll until the backfill is complete; fail at once on a failed run, with its logs."""
    t0 = time.monotonic()
    reported: set[tuple[str, str]] = set()
    while time.monotonic() - t0 < BACKFILL_TIMEOUT_S:
        af.check_alive()
        runs = _runs(af, token, days)
        for run in runs:
            if run["state"] == "failed":
                tis = af.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances", token).json()
                bad = [t["task_id"] for t in tis["task_instances"] if t["state"] in ("failed", "upstream_failed")]
                _fail(af, f"run {run['dag_run_id']} failed in {bad}", run_id=run["dag_run_id"], task_ids=bad)
            if run["state"] == "running":
                tis = af.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances", token).json()
                for t in tis["task_instances"]:
                    if t["state"] == "up_for_retry" and (run["dag_run_id"], t["task_id"]) not in reported:
                        reported.add((run["dag_run_id"], t["task_id"]))
                        print(f"{t['task_id']} of {run['dag_run_id']} will be retried; its log:")
                        print(af.task_logs(DAG_ID, run_id=run["dag_run_id"], task_ids=[t["task_id"]]))
        backfill = af.api("GET", f"/api/v2/backfills/{backfill_id}", token).json()
        if backfill.get("completed_at"):
            print(f"backfill {backfill_id}: {len(runs)} runs in {time.monotonic() - t0:.0f}s")
            return runs
        time.sleep(POLL_S)
    _fail(af, f"backfill {backfill_id} not complete after {BACKFILL_TIMEOUT_S}s: "
              + str([(r["logical_date"], r["state"]) for r in _runs(af, token, days)]))


def _batches(url: str, days: list[dt.date]) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT batch_id, ds, status, row_count, user_count, k, run_id, summary FROM recsys.batches "
            "WHERE ds = ANY(%s) ORDER BY batch_id",
            (days,),
        ).fetchall()


def _published(url: str, days: list[dt.date]) -> dict[dt.date, tuple]:
    rows = [b for b in _batches(url, days) if b[2] == "published"]
    by_ds = {b[1]: b for b in rows}
    assert len(by_ds) == len(rows), f"more than one published batch for a date: {rows}"
    return by_ds


def _list_rows(url: str) -> tuple[int, int, set[int]]:
    """(user-list rows, distinct (batch, user), batch ids) over every attached partition."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT batch_id, user_id, item_ids FROM recsys.recommendation_lists").fetchall()
    for batch_id, user, items in rows:
        # Stored as an array or as text joined by U+001F, depending on the schema version.
        items = items.split("\x1f") if isinstance(items, str) else list(items)
        assert len(items) == len(set(items)) == K, (batch_id, user, items)
    return len(rows), len({(b, u) for b, u, _ in rows}), {b for b, _, _ in rows}


def test_backfill_through_the_rest_api_then_reprocess(pg_url, tmp_path):
    t_start = time.monotonic()
    # Past dates only: a backfill covers runs whose data interval has ended.
    end = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=2)
    days = _dates(end)
    lake = tmp_path / "lake"
    generate(lake, GenerateConfig(**{**TINY, "end_date": end}))
    url = fresh_database(pg_url)
    home = tmp_path / "airflow"
    metadata = postgres_metadata(pg_url, "airflow_" + uuid.uuid4().hex[:8])
    prepare(home, metadata)
    extra = {
        **metadata,
        "RECSYS_LAKE_ROOT": str(lake),
        "RECSYS_DATABASE_URL": url,
        "RECSYS_SPARK_MASTER": "local[2]",
        "RECSYS_SPARK_DRIVER_MEMORY": "1g",
        "RECSYS_DEVICE": "cpu",
        # Three nights: the co-occurrence model, not the default mtrl, keeps them short (no training run).
        "RECSYS_MODEL_KIND": "cooc",
        # Each Spark task starts its own short-lived JVM: the quick C1 compiler alone halves the
        # validate and features times on two busy cores (measured 77s -> 40s per run).
        "JAVA_TOOL_OPTIONS": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    }
    # No scheduled runs: only the backfills run.
    with LocalAirflow(home, extra, use_job_schedule=False) as af:
        token = af.token()
        _wait_for_dag(af, token)
        r = af.api("PATCH", f"/api/v2/dags/{DAG_ID}", token, json={"is_paused": False})
        assert r.status_code == 200 and r.json()["is_paused"] is False, r.text

        # A bad Param is refused before any run exists.
        bad = af.api("POST", "/api/v2/backfills", token, json={**_backfill_body(days, "none"), "dag_run_conf": {"top_k": 0}})
        assert bad.status_code == 422, bad.text
        assert "top_k" in bad.text and "minimum" in bad.text

        bad = af.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", token, json={"logical_date": None, "conf": {"top_k": "abc"}})
        assert bad.status_code == 400 and "Invalid input for param top_k" in bad.text, bad.text

        dry = af.api("POST", "/api/v2/backfills/dry_run", token, json=_backfill_body(days, "none"))
        assert dry.status_code == 200, dry.text
        assert [b["logical_date"][:10] for b in dry.json()["backfills"]] == [d.isoformat() for d in days]

        # 1. The first backfill: two runs, in date order, two published batches.
        created = af.api("POST", "/api/v2/backfills", token, json=_backfill_body(days, "none"))
        assert created.status_code == 200, created.text
        runs = _wait_for_backfill(af, token, created.json()["id"], days)
        t_first = time.monotonic()
        assert [(r["logical_date"][:10], r["state"], r["run_type"]) for r in runs] == [
            (d.isoformat(), "success", "backfill") for d in days
        ]
        assert all(r["conf"] == {"top_k": K} for r in runs)
        first = _published(url, days)
        assert sorted(first) == days
        for ds, (batch_id, _, _, rows, users, k, run_id, summary) in first.items():
            assert k == K and rows == users * K and users > 50, (ds, rows, users)
            run = summary["run"]  # the structured run summary the publish task recorded
            assert run["ds"] == ds.isoformat() and run["run_id"] == run_id
            assert run["published"]["rows"] == rows and run["gate"]["decision"] in ("pass", "fail", "forced")
            assert run["input"]["rows_in"] > 0 and run["features"]["rows"]["sequences"] > 0
            assert {"validate", "features", "train", "score", "publish"} <= set(run["seconds"])

        # The same days again: nothing to create without reprocessing.
        again = af.api("POST", "/api/v2/backfills/dry_run", token, json=_backfill_body(days, "none"))
        assert again.status_code == 200 and again.json()["total_entries"] == 0, again.text

        # 2. Reprocess the completed second day: its batch is replaced, row for row; the first
        # day's batch, outside the range, stays as it was.
        redo = days[1:]
        created = af.api("POST", "/api/v2/backfills", token, json=_backfill_body(redo, "completed"))
        assert created.status_code == 200, created.text
        runs = _wait_for_backfill(af, token, created.json()["id"], redo)
        assert [(r["logical_date"][:10], r["state"]) for r in runs] == [(d.isoformat(), "success") for d in redo]
        second = _published(url, days)
        assert sorted(second) == days
        assert second[days[0]] == first[days[0]], "the day outside the reprocessed range changed"
        for ds in redo:
            assert second[ds][0] != first[ds][0], f"{ds} was not republished"
            assert (second[ds][3], second[ds][4]) == (first[ds][3], first[ds][4]), f"{ds}: row counts changed"
        # The replaced batch is gone from the table (retention dropped it), nothing is doubled.
        statuses = {b[0]: b[2] for b in _batches(url, days)}
        assert all(statuses[first[ds][0]] in ("replaced", "dropped") for ds in redo), statuses
        n, distinct, ids = _list_rows(url)
        assert ids == {second[ds][0] for ds in days}
        assert n == distinct == sum(second[ds][4] for ds in days)

        # Every publish updated the Asset downstream DAGs can be scheduled on.
        events = af.api("GET", "/api/v2/assets/events", token, params={"source_dag_id": DAG_ID, "limit": 50}).json()
        published_ds = sorted(e["extra"]["ds"] for e in events["asset_events"] if e["uri"] == "x-recsys://recommendations")
        assert published_ds == sorted([d.isoformat() for d in days + redo])

        # The README's CLI form names the same two runs.
        cli = subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), "backfill", "create", "--dag-id", DAG_ID,
             "--from-date", days[0].isoformat(), "--to-date", f"{days[-1].isoformat()}T02:00:00+00:00",
             "--reprocess-behavior", "completed", "--max-active-runs", "1", "--dag-run-conf", f'{{"top_k": {K}}}',
             "--dry-run"],
            env=af.env, capture_output=True, text=True, timeout=180,
        )
        assert cli.returncode == 0, cli.stderr[-2000:]
        assert all(f"{d.isoformat()} 02:00:00+00:00" in cli.stdout for d in days), cli.stdout[-2000:]

    # What an operator sees afterwards.
    status = subprocess.run(
        [str(Path(sys.executable).parent / "recsys"), "--database-url", url, "status", "--limit", "4"],
        capture_output=True, text=True, timeout=120,
    )
    print(status.stdout)
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("published") == 2 and status.stdout.count("stages: validate") >= 2
    print(f"backfill test: first backfill {t_first - t_start:.0f}s after start, total {time.monotonic() - t_start:.0f}s")
