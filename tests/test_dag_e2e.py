"""The nightly DAG end to end through Airflow's own dag.test(), on a tiny generated log."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from recsys.data.generate import GenerateConfig, generate
from tests.helpers import TINY, fresh_database, published

pytestmark = pytest.mark.slow
DS = TINY["end_date"]


def test_nightly_dag_publishes_top_k(airflow_home, pg_url, tmp_path, monkeypatch, spark):
    lake = tmp_path / "lake"
    generate(lake, GenerateConfig(**TINY))
    url = fresh_database(pg_url)
    monkeypatch.setenv("RECSYS_LAKE_ROOT", str(lake))
    monkeypatch.setenv("RECSYS_DATABASE_URL", url)
    monkeypatch.setenv("RECSYS_SPARK_MASTER", "local[2]")
    monkeypatch.setenv("RECSYS_MODEL_KIND", "mtrl")  # the neural model through the whole DAG
    monkeypatch.setenv("RECSYS_MODEL_EPOCHS", "3")

    from airflow.dag_processing.dagbag import DagBag

    from recsys.airflow_local import PROJECT_ROOT

    dag = DagBag(dag_folder=str(PROJECT_ROOT / "dags")).dags["recsys_nightly"]
    for t in dag.tasks:  # a failure should fail the test now, not after the production retry delays
        t.retries = 0
    run = dag.test(logical_date=dt.datetime(DS.year, DS.month, DS.day, 2, tzinfo=dt.timezone.utc), run_conf={"top_k": 7})
    assert str(run.state) in ("success", "DagRunState.SUCCESS"), run.state

    rows = published(url)
    users = {r[0] for r in rows}
    assert len(users) > 50
    assert len(rows) == 7 * len(users)
    with psycopg.connect(url) as conn:
        batch = conn.execute("SELECT ds, row_count, k FROM recsys.current_batch").fetchone()
        decision = conn.execute("SELECT decision FROM recsys.evaluations WHERE ds = %s", (DS,)).fetchone()
        champions = conn.execute("SELECT model_version FROM recsys.models WHERE status = 'champion'").fetchall()
    assert batch == (DS, len(rows), 7)
    # On this tiny log three epochs leave the network far below popularity (about 0.13 against
    # 0.19 NDCG@10), so the first night's gate fails and a baseline becomes the one champion:
    # popularity, which ranks a little better than item co-occurrence here.
    assert decision[0] == "fail"
    assert len(champions) == 1 and champions[0][0].startswith("popularity-")
