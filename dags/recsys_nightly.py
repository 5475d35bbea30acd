"""
### recsys_nightly

Nightly batch recommendations for the day `ds` (the run's data interval):

validate -> features -> encode item text -> train -> evaluate -> gate -> score -> publish -> retention

Every task is a thin wrapper around a `recsys.pipeline.stages` function keyed on `ds`;
tasks pass ids and paths, never data. Re-running a date replaces that date's batch atomically.

**Params**: `top_k` (list length), `force_promote` (serve the challenger even if the gate
fails; recorded as a forced decision).

Backfill a range from the UI (Trigger -> Backfill), the CLI
(`airflow backfill create --dag-id recsys_nightly --from-date ... --to-date ...`) or the REST
API (`POST /api/v2/backfills`).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

DAG_ID = "recsys_nightly"
PARAM_TOP_K = "top_k"
PARAM_FORCE_PROMOTE = "force_promote"
GPU_POOL = "gpu"


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
        "execution_timeout": timedelta(hours=2),
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

        return stages.validate(ds, _settings(params))

    @task
    def features(_: dict, ds=None, params=None) -> dict:
        from recsys.pipeline import stages

        return stages.features(ds, _settings(params))

    @task
    def encode(_: dict, ds=None, params=None) -> dict:
        from recsys.pipeline import stages

        return stages.encode(ds, _settings(params))

    @task(pool=GPU_POOL, execution_timeout=timedelta(hours=6))
    def train(_f: dict, _e: dict, ds=None, params=None) -> dict:
        from recsys.pipeline import stages

        return stages.train(ds, _settings(params))

    @task
    def evaluate(_: dict, ds=None, params=None) -> dict:
        from recsys.pipeline import stages

        result = stages.evaluate(ds, _settings(params))
        print(result["table"])  # the comparison, readable in the task log
        return {k: v for k, v in result.items() if k != "metrics"}

    @task.branch
    def gate(_: dict, ds=None, params=None, run_id=None) -> str:
        """Records the decision; the branch taken shows it in the grid."""
        from recsys.pipeline import stages

        force = bool(params.get(PARAM_FORCE_PROMOTE))
        result = stages.gate(ds, _settings(params), force_promote=force, forced_by=f"airflow:{run_id}" if force else None)
        print(f"gate {result['decision']}: " + "; ".join(result["reasons"]))
        print(f"evaluation report: {result['report']}")
        return "promote_challenger" if result["promote"] else "keep_champion"

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

        return stages.score(ds, _settings(params))

    @task(retries=3)
    def publish(_: dict, ds=None, params=None, run_id=None) -> dict:
        from recsys.pipeline import stages

        return stages.publish(ds, _settings(params), run_id=run_id)

    @task
    def retention(_: dict, ds=None, params=None) -> dict:
        from recsys.pipeline import stages

        return stages.retention(ds, _settings(params))

    feats = features(validate())
    trained = train(feats, encode(feats))
    decision = gate(evaluate(trained))
    scored = score()
    decision >> [promote_challenger(), keep_champion()] >> scored
    retention(publish(scored))


recsys_nightly()
