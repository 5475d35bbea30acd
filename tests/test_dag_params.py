"""DAG operations: Params validated by JSON schema, retries and timeouts, the failure callback,
the published Asset, the gpu pool and queue, and the run summary behind `recsys status`."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import types
from pathlib import Path

import psycopg
import pytest

from recsys.airflow_local import PROJECT_ROOT, airflow
from recsys.store import runlog
from recsys.store.migrate import migrate
from tests.helpers import fresh_database

DAG_ID = "recsys_nightly"
BAD_CONF = [
    ({"top_k": "abc"}, "is not of type 'integer'"),
    ({"top_k": 0}, "less than the minimum of 1"),
    ({"top_k": 1001}, "greater than the maximum of 1000"),
    ({"force_promote": "yes"}, "is not of type 'boolean'"),
]


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


@pytest.fixture(scope="module")
def serialized(dag):
    """The DAG as the scheduler and the API server see it (after serialization)."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(DagSerialization.to_dict(dag))


# --- Params ------------------------------------------------------------------------------------


def test_params_have_defaults_and_a_json_schema(serialized):
    params = serialized.params
    assert params.validate() == {"top_k": 50, "force_promote": False}
    schema = params.get_param("top_k").schema
    assert (schema["type"], schema["minimum"], schema["maximum"]) == ("integer", 1, 1000)
    assert params.get_param("force_promote").schema["type"] == "boolean"
    assert params.deep_merge({"top_k": 7}).validate()["top_k"] == 7


@pytest.mark.parametrize(("conf", "message"), BAD_CONF)
def test_a_bad_param_is_refused_with_a_clear_message(serialized, conf, message):
    # airflow's ParamValidationError is a ValueError (core and task SDK alike).
    with pytest.raises(ValueError) as err:
        serialized.params.deep_merge(conf).validate()
    name = next(iter(conf))
    assert f"Invalid input for param {name}" in str(err.value) and message in str(err.value)


@pytest.fixture(scope="module")
def api(airflow_home):
    """The real REST API (the routes the UI's trigger dialog posts to), in process."""
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    from recsys.airflow_local import airflow_env

    airflow(["dags", "reserialize"], airflow_env(airflow_home), capture=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    # Without one Airflow makes up a 16-byte key, too short for its HS512 signatures.
    mp.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(64))
    try:
        client = TestClient(create_app("core"))
        token = client.get("/auth/token").json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield client
    finally:
        mp.undo()


@pytest.mark.parametrize(("conf", "message"), BAD_CONF)
def test_triggering_with_a_bad_param_is_refused_by_the_api(api, conf, message):
    before = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns").json()["total_entries"]
    r = api.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert f"Invalid input for param {next(iter(conf))}" in detail and message in detail
    assert api.get(f"/api/v2/dags/{DAG_ID}/dagRuns").json()["total_entries"] == before  # no run was created


def test_a_backfill_with_a_bad_param_is_refused_by_the_api(api):
    day = dt.date.today() - dt.timedelta(days=3)
    body = {"dag_id": DAG_ID, "from_date": f"{day}T00:00:00Z", "to_date": f"{day}T02:00:00Z",
            "dag_run_conf": {"top_k": "abc"}}
    r = api.post("/api/v2/backfills/dry_run", json=body)
    assert r.status_code == 422, r.text
    assert "top_k" in r.text and "is not of type 'integer'" in r.text


# --- retries, timeouts, pool and queue, asset ----------------------------------------------------


def test_every_task_retries_with_backoff_and_has_a_timeout(dag):
    for t in dag.tasks:
        assert t.retries >= 1, t.task_id
        assert t.retry_exponential_backoff, t.task_id
        assert t.max_retry_delay is not None, t.task_id
        assert t.execution_timeout is not None and t.execution_timeout <= dt.timedelta(hours=6), t.task_id
        assert t.on_failure_callback, t.task_id


def test_training_uses_the_gpu_pool_and_queue(dag):
    train = dag.get_task("train")
    assert (train.pool, train.queue) == ("gpu", "gpu")
    assert all(t.queue != "gpu" for t in dag.tasks if t.task_id != "train")


def test_publish_updates_the_recommendations_asset(dag, serialized):
    from airflow.sdk import Asset

    outlets = dag.get_task("publish").outlets
    assert outlets == [Asset(name="recsys_recommendations", uri="x-recsys://recommendations", group="recsys",
                             extra={"view": "recsys.current_recommendations"})]
    # A downstream DAG can be scheduled on it.
    assert [a.uri for a in serialized.get_task("publish").outlets] == ["x-recsys://recommendations"]


# --- the failure callback ------------------------------------------------------------------------


def _context(ds: str, run_id: str, task_id: str, try_number: int, exc: BaseException | None) -> dict:
    ti = types.SimpleNamespace(task_id=task_id, try_number=try_number)
    return {"ds": ds, "run_id": run_id, "ti": ti, "exception": exc, "params": {"top_k": 7}}


def _failed_rows(url: str, ds: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT batch_id, status, k, run_id, error, summary FROM recsys.batches WHERE ds = %s ORDER BY batch_id",
            (ds,),
        ).fetchall()


def test_failure_callback_records_the_task_and_its_cause(pg_url, monkeypatch, dag):
    url = fresh_database(pg_url)
    monkeypatch.setenv("RECSYS_DATABASE_URL", url)
    callback = dag.get_task("features").on_failure_callback
    callback = callback[0] if isinstance(callback, list) else callback

    err = ValueError("raw/events/date=2026-11-27: 42% of rows bad\n  (null_field: 10)")
    callback(_context("2026-11-27", "backfill__2026-11-28T02:00:00+00:00", "validate", 3, err))
    rows = _failed_rows(url, "2026-11-27")
    assert len(rows) == 1
    batch_id, status, k, run_id, error, summary = rows[0]
    assert (status, k, run_id) == ("failed", 7, "backfill__2026-11-28T02:00:00+00:00")
    assert error == "task validate failed (try 3): ValueError: raw/events/date=2026-11-27: 42% of rows bad; (null_field: 10)"
    assert "\n" not in error
    assert summary["failure"]["task_id"] == "validate" and summary["failure"]["try_number"] == 3

    # The same run failing again (cleared and rerun) updates its row; another run gets its own.
    callback(_context("2026-11-27", "backfill__2026-11-28T02:00:00+00:00", "publish", 1, TimeoutError("slow")))
    callback(_context("2026-11-27", "scheduled__2026-11-28T02:00:00+00:00", "train", 2, None))
    rows = _failed_rows(url, "2026-11-27")
    assert len(rows) == 2
    assert rows[0][0] == batch_id and rows[0][4] == "task publish failed (try 1): TimeoutError: slow"
    assert rows[1][4].startswith("task train failed (try 2): no exception recorded")
    with psycopg.connect(url) as conn:  # readers never see a failed attempt
        assert conn.execute("SELECT count(*) FROM recsys.current_batch").fetchone()[0] == 0


@pytest.mark.slow
def test_a_failed_run_is_recorded_by_the_real_callback(airflow_home, pg_url, tmp_path, monkeypatch, spark, dag):
    """Through Airflow's task runner: a run on an empty lake fails in validate and is recorded."""
    url = fresh_database(pg_url)
    monkeypatch.setenv("RECSYS_LAKE_ROOT", str(tmp_path / "empty-lake"))
    monkeypatch.setenv("RECSYS_DATABASE_URL", url)
    monkeypatch.setenv("RECSYS_SPARK_MASTER", "local[2]")
    for t in dag.tasks:  # fail now, not after the production retry delays
        monkeypatch.setattr(t, "retries", 0)
    run = dag.test(logical_date=dt.datetime(2026, 11, 20, 2, tzinfo=dt.timezone.utc), run_conf={"top_k": 9})
    assert str(run.state) in ("failed", "DagRunState.FAILED"), run.state
    rows = _failed_rows(url, "2026-11-20")
    assert len(rows) == 1
    _, status, k, run_id, error, summary = rows[0]
    assert (status, k, run_id) == ("failed", 9, run.run_id)
    assert error == ("task validate failed (try 1): InputError: raw/events/date=2026-11-20: "
                     "raw events for the run date missing")
    assert summary["failure"]["task_id"] == "validate"


def test_failure_callback_never_raises(monkeypatch, dag):
    callback = dag.get_task("train").on_failure_callback
    callback = callback[0] if isinstance(callback, list) else callback
    monkeypatch.setenv("RECSYS_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    callback(_context("2026-11-27", "r", "train", 1, RuntimeError("boom")))  # unreachable database
    monkeypatch.setenv("RECSYS_NOT_A_SETTING", "1")
    callback(_context("2026-11-27", "r", "train", 1, RuntimeError("boom")))  # broken settings
    callback({})  # a context without anything
    assert runlog.record_task_failure({}) is None


# --- the run summary and `recsys status` ---------------------------------------------------------

STAGE_RESULTS = {
    "validate": {"ds": "2026-11-27", "status": "ok", "error": None, "rows_in": 1000, "rows_clean": 990,
                 "rows_quarantined": 10, "reasons": {"unknown_item": 10},
                 "today": {"rows_in": 100, "rows_clean": 100, "rows_quarantined": 0, "reasons": {}, "bad_share": 0.0},
                 "days_validated": ["2026-11-27"], "seconds": 12.5},
    "features": {"ds": "2026-11-27", "split_mode": "temporal",
                 "window": {"start": "2026-09-29", "end": "2026-11-27", "days_with_events": 12, "days_missing": []},
                 "settings": {"history_days": 60, "holdout_days": 1, "max_seq_len": 50},
                 "outputs": {"sequences": {"path": "x", "rows": 80}, "item_stats": {"path": "y", "rows": 50}},
                 "splits": {"train": 800, "valid": 90, "test": 100},
                 "item_map": {"snapshot": "z", "previous": "w", "items": 50, "new_items": 2},
                 "events_read": 990, "events_without_item": 0, "seconds": 20.0},
    "encode": {"texts": 50, "encoded": 2, "cached": 48, "dim": 384, "path": "v", "model": "m", "seconds": 1.0},
    "train": {"model_version": "cooc-2026-11-27-abc", "path": "u", "fingerprint": "abc", "train_interactions": 890,
              "items": 50, "seconds": 2.0},
    "evaluate": {"model_version": "cooc-2026-11-27-abc", "champion_version": None, "users": 40, "table": "t",
                 "metrics": {"challenger": {"ndcg@10": 0.123456, "hr@10": 0.5, "extra": 1.0},
                             "popularity": {"ndcg@10": 0.1}}, "seconds": 0.5},
    "gate": {"decision": "pass", "promote": True, "reasons": ["ndcg ok"], "serving_version": "cooc-2026-11-27-abc"},
    "score": {"path": "s", "users": 80, "rows": 400, "k": 5, "cold_start_users": 0,
              "model_version": "cooc-2026-11-27-abc", "seconds": 0.3},
    "publish": {"batch_id": 1, "rows": 400, "users": 80, "replaced_batch_ids": [], "similar_rows": 1000,
                "seconds": 0.2},
}


def _write_run(lake: Path, ds: str) -> None:
    runs = lake / "runs" / f"ds={ds}"
    runs.mkdir(parents=True)
    for stage, result in STAGE_RESULTS.items():
        (runs / f"{stage}.json").write_text(json.dumps(result))


def test_run_summary_gathers_every_stage(tmp_path):
    _write_run(tmp_path, "2026-11-27")
    s = runlog.collect_run_summary(tmp_path, "2026-11-27", run_id="r1")
    assert s["input"] == {"rows_in": 1000, "rows_clean": 990, "rows_quarantined": 10,
                          "quarantine_reasons": {"unknown_item": 10}, "rows_in_ds": 100, "days_validated": 1}
    assert s["features"]["rows"] == {"sequences": 80, "item_stats": 50} and s["features"]["new_items"] == 2
    assert s["model"]["metrics"] == {"challenger": {"ndcg@10": 0.1235, "hr@10": 0.5}, "popularity": {"ndcg@10": 0.1}}
    assert s["gate"]["decision"] == "pass" and s["published"]["rows"] == 400
    assert s["seconds"] == {"validate": 12.5, "features": 20.0, "encode": 1.0, "train": 2.0, "evaluate": 0.5,
                            "score": 0.3, "publish": 0.2}
    assert s["seconds_total"] == 36.5 and s["run_id"] == "r1"
    # A run that stopped early summarises what it did.
    assert set(runlog.collect_run_summary(tmp_path, "2026-11-26")) == {"ds", "seconds", "seconds_total"}


def test_recsys_status_prints_the_last_runs(tmp_path, pg_url, capsys):
    from recsys.cli import main

    url = fresh_database(pg_url)
    migrate(url)
    _write_run(tmp_path, "2026-11-27")
    with psycopg.connect(url, autocommit=True) as conn:
        batch_id = conn.execute(
            "INSERT INTO recsys.batches (ds, model_version, status, row_count, user_count, k, run_id, published_at, "
            "summary) VALUES ('2026-11-27', 'cooc-2026-11-27-abc', 'published', 400, 80, 5, 'r1', now(), "
            "'{\"copy_seconds\": 0.1}') RETURNING batch_id"
        ).fetchone()[0]
    runlog.record_run_summary(url, batch_id, runlog.collect_run_summary(tmp_path, "2026-11-27", run_id="r1"))
    runlog.record_failure(url, ds="2026-11-28", run_id="r2", task_id="validate", try_number=3, cause="InputError: gone")
    with psycopg.connect(url) as conn:
        summary = conn.execute("SELECT summary FROM recsys.batches WHERE batch_id = %s", (batch_id,)).fetchone()[0]
    assert summary["copy_seconds"] == 0.1 and summary["run"]["gate"]["decision"] == "pass"  # merged, not replaced

    assert main(["--database-url", url, "status", "--limit", "5"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["batch", "ds", "status", "rows", "users"]
    published_line = next(line for line in lines if line.strip().startswith(str(batch_id)))
    assert "published*" in published_line and "pass" in published_line and "0.1235" in published_line
    assert "stages: validate 12.5s, features 20.0s" in out
    assert "input: 1000 rows, 10 quarantined (unknown_item: 10)" in out
    assert "error: task validate failed (try 3): InputError: gone" in out
    assert out.index("2026-11-28") < out.index("2026-11-27")  # newest first
