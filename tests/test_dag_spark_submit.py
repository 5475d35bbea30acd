"""With a Spark connection configured, validate and features go through spark-submit."""

from __future__ import annotations

from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parent.parent / "dags"
ROOT = DAGS.parent
TASK_IDS = {
    "validate", "features", "encode", "train", "evaluate", "gate", "promote_challenger", "keep_champion",
    "score", "publish", "retention",
}


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.dags["recsys_nightly"]


@pytest.mark.parametrize(
    "env, conn_id",
    [
        ({"AIRFLOW_CONN_SPARK_DEFAULT": "spark://spark-master:7077"}, "spark_default"),
        ({"RECSYS_SPARK_CONN_ID": "spark_cluster"}, "spark_cluster"),
    ],
)
def test_spark_connection_runs_validate_and_features_through_spark_submit(monkeypatch, env, conn_id):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    dag = _dag()
    assert set(dag.task_ids) == TASK_IDS
    for task_id, script in (("validate", "spark_jobs/validate.py"), ("features", "spark_jobs/features.py")):
        task = dag.get_task(task_id)
        assert isinstance(task, SparkSubmitOperator)
        assert task.application == str(ROOT / script)
        assert Path(task.application).is_file()
        assert task.application_args == ["--ds", "{{ ds }}"]
        assert task._conn_id == conn_id
        assert task.retries >= 1
    assert dag.get_task("features").upstream_task_ids == {"validate"}
    assert dag.get_task("encode").upstream_task_ids == {"features"}
    assert dag.get_task("train").upstream_task_ids == {"features", "encode"}


def test_without_a_connection_validate_and_features_run_in_process(monkeypatch):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    monkeypatch.delenv("AIRFLOW_CONN_SPARK_DEFAULT", raising=False)
    monkeypatch.delenv("RECSYS_SPARK_CONN_ID", raising=False)
    dag = _dag()
    assert set(dag.task_ids) == TASK_IDS
    for task_id in ("validate", "features"):
        task = dag.get_task(task_id)
        assert not isinstance(task, SparkSubmitOperator)
        assert task.python_callable.__name__ == task_id
    assert dag.get_task("features").upstream_task_ids == {"validate"}
