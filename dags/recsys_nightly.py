"""
### recsys_nightly

Nightly batch recommendations for the day `ds` (the run's data interval):

validate -> features -> encode item text -> train -> evaluate -> gate -> score -> publish -> retention

Every task is a thin wrapper around a `recsys.pipeline.stages` function keyed on `ds`;
tasks pass ids and paths, never data: each returns its stage's result (a
`recsys.pipeline.results` model) as JSON for XCom, the same document as
`runs/ds=<ds>/<stage>.json`. Re-running a date replaces that date's batch atomically.

**Params**: `top_k` (list length), `force_promote` (serve the challenger even if the gate
fails; recorded as a forced decision).

Backfill a range from the UI (Trigger -> Backfill), the CLI
(`airflow backfill create --dag-id recsys_nightly --from-date ... --to-date ...`) or the REST
API (`POST /api/v2/backfills`), with max active runs 1: each day builds on the one before.
Logical dates are 02:00 UTC and the range is inclusive, so end at the last day's 02:00.

**Operations**: a task that fails for good is recorded as a `failed` row of `recsys.batches`
(task, try, one-line cause); each publish stores the run summary on its batch and updates the
Asset `recsys_recommendations` that downstream DAGs can be scheduled on.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Asset, Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

DAG_ID = "recsys_nightly"
PARAM_TOP_K = "top_k"
PARAM_FORCE_PROMOTE = "force_promote"
GPU_POOL = "gpu"
# Celery/Kubernetes route training to workers that own a GPU; LocalExecutor ignores queues.
GPU_QUEUE = "gpu"
# Updated by every successful publish: downstream DAGs can run on `schedule=[RECOMMENDATIONS]`.
# An `x-` scheme is never rewritten by a provider's URI normaliser, whatever is installed.
RECOMMENDATIONS = Asset(
    name="recsys_recommendations",
    uri="x-recsys://recommendations",
    group="recsys",
    extra={"view": "recsys.current_recommendations"},
)


# validate and features run in-process (local[*] Spark) unless a Spark connection is configured;
# then they go through spark-submit. Decided at parse time from the environment only (a
# metadata-database lookup while parsing is discouraged): RECSYS_SPARK_CONN_ID names the
# connection, or AIRFLOW_CONN_SPARK_DEFAULT defines `spark_default`.
SPARK_CONN_ENV = "RECSYS_SPARK_CONN_ID"
SPARK_JOBS = Path(__file__).resolve().parent.parent / "spark_jobs"


def spark_conn_id() -> str | None:
    """The Airflow connection to spark-submit the Spark jobs through; None means in-process."""
    if os.environ.get(SPARK_CONN_ENV):
        return os.environ[SPARK_CONN_ENV]
    if os.environ.get("AIRFLOW_CONN_SPARK_DEFAULT"):
        return "spark_default"
    return None


def _spark_submit(job: str, conn_id: str):
    """`spark-submit spark_jobs/<job>.py --ds <ds>`; the job reads the same RECSYS_* settings
    (lake root, thresholds) from the environment as the in-process tasks."""
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    return SparkSubmitOperator(
        task_id=job,
        application=str(SPARK_JOBS / f"{job}.py"),
        application_args=["--ds", "{{ ds }}"],
        conn_id=conn_id,
        name=f"recsys-{job}-{{{{ ds }}}}",
    )


def _record_failure(context) -> None:
    """on_failure_callback: the failed task, its try number and a one-line cause into recsys.batches.

    Runs once a task has failed for good (after its retries); it never raises, so a broken
    database cannot hide the task's own error.
    """
    try:
        from recsys.store.runlog import record_task_failure

        record_task_failure(context)
    except Exception as err:  # even an import error must not escape a callback
        print(f"recording the failure in recsys.batches failed: {err}")


def _settings(params: dict):
    """Settings from env/file, with the run's Params on top (a Param is a per-run CLI flag)."""
    from recsys.config import load_settings

    return load_settings(top_k=params.get(PARAM_TOP_K))


@dag(
    dag_id=DAG_ID,
    # The 02:00 UTC run processes the previous day: logical date = start of the data interval = ds.
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        # Backoff doubles from retry_delay; a flapping dependency is retried within the night.
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(hours=2),
        "on_failure_callback": _record_failure,
    },
    params={
        PARAM_TOP_K: Param(50, type="integer", minimum=1, maximum=1000, description="Recommendations per user"),
        PARAM_FORCE_PROMOTE: Param(False, type="boolean", description="Promote the challenger even if the gate fails"),
    },
    doc_md=__doc__,
    tags=["recsys"],
)
def recsys_nightly():
    @task
    def validate(ds=None, params=None) -> dict:
        from recsys.pipeline import stages

        return stages.validate(ds, _settings(params)).model_dump(mode="json")

    @task
    def features(_: dict, ds=None, params=None) -> dict:
        from recsys.pipeline import stages

        return stages.features(ds, _settings(params)).model_dump(mode="json")

    @task
    def encode(_: dict, ds=None, params=None) -> dict:
        from recsys.pipeline import stages

        return stages.encode(ds, _settings(params)).model_dump(mode="json")

    @task(pool=GPU_POOL, queue=GPU_QUEUE, execution_timeout=timedelta(hours=6))
    def train(_f: dict, _e: dict, ds=None, params=None) -> dict:
        from recsys.pipeline import stages

        return stages.train(ds, _settings(params)).model_dump(mode="json")

    @task
    def evaluate(_: dict, ds=None, params=None) -> dict:
        from recsys.pipeline import stages

        result = stages.evaluate(ds, _settings(params))
        print(result.table)  # the comparison, readable in the task log
        # The metrics are the bulk of the result and no task reads them from XCom: evaluate.json has them.
        return result.model_dump(mode="json", exclude={"metrics"})

    @task.branch
    def gate(_: dict, ds=None, params=None, run_id=None) -> str:
        """Records the decision; the branch taken shows it in the grid."""
        from recsys.pipeline import stages

        force = bool(params.get(PARAM_FORCE_PROMOTE))
        result = stages.gate(ds, _settings(params), force_promote=force, forced_by=f"airflow:{run_id}" if force else None)
        print(f"gate {result.decision}: " + "; ".join(result.reasons))
        print(f"evaluation report: {result.report}")
        return "promote_challenger" if result.promote else "keep_champion"

    @task
    def promote_challenger(ds=None) -> None:
        print(f"challenger serves from {ds}")

    @task
    def keep_champion(ds=None) -> None:
        print(f"gate failed: the champion keeps serving and scores tonight's features for {ds}")

    # Runs after whichever branch the gate took.
    @task(trigger_rule="none_failed_min_one_success")
    def score(ds=None, params=None) -> dict:
        from recsys.pipeline import stages

        return stages.score(ds, _settings(params)).model_dump(mode="json")

    @task(retries=3, execution_timeout=timedelta(minutes=30), outlets=[RECOMMENDATIONS])
    def publish(_: dict, ds=None, params=None, run_id=None, outlet_events=None) -> dict:
        """Switch tonight's batch in, then store the run summary on it and print it to this log."""
        import json

        from recsys.pipeline import stages
        from recsys.store.runlog import summarise_published_run

        settings = _settings(params)
        result = stages.publish(ds, settings, run_id=run_id)
        summary = summarise_published_run(settings, ds, result.batch_id, run_id=run_id)
        print("run summary: " + json.dumps(summary, default=str))
        if outlet_events is not None:  # what a downstream DAG sees in its triggering asset event
            outlet_events[RECOMMENDATIONS].extra = {"ds": ds, "batch_id": result.batch_id, "rows": result.rows}
        return result.model_dump(mode="json")

    @task
    def retention(_: dict, ds=None, params=None) -> dict:
        from recsys.pipeline import stages

        return stages.retention(ds, _settings(params)).model_dump(mode="json")

    conn_id = spark_conn_id()
    if conn_id:
        feats = _spark_submit("features", conn_id)
        _spark_submit("validate", conn_id) >> feats
        feats = feats.output  # None: a spark-submit task returns nothing; the edge is what counts
    else:
        feats = features(validate())
    trained = train(feats, encode(feats))
    decision = gate(evaluate(trained))
    scored = score()
    decision >> [promote_challenger(), keep_champion()] >> scored
    retention(publish(scored))


recsys_nightly()
