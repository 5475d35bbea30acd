"""`make demo`: synthetic data -> the nightly DAG through Airflow -> real lists in PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.lake import Lake, parse_ds
from recsys.pipeline.results import EvaluateResult, GateResult
from recsys.tables import text_table

DAG_ID = "recsys_nightly"


def settings_env(settings: Settings) -> dict:
    """Hand this process's effective settings to Airflow's task processes."""
    env = {"RECSYS_LAKE_ROOT": str(Path(settings.lake_root).resolve()), "RECSYS_PG_DATA": str(Path(settings.pg_data).resolve())}
    if settings.database_url:
        env["RECSYS_DATABASE_URL"] = settings.database_url
    env["RECSYS_TOP_K"] = str(settings.top_k)
    env["RECSYS_SPARK_MASTER"] = settings.spark_master
    return env


def serving_why(gate: GateResult) -> str:
    """Why the serving model serves, in a few words, from the gate stage's result."""
    from recsys.pipeline.stages import FIRST_NIGHT

    if gate.decision == "forced":
        return "the challenger failed the gate and was promoted by force"
    if gate.promote:
        return "the challenger passed the gate"
    first_night = [r[len(FIRST_NIGHT):] for r in gate.reasons if r.startswith(FIRST_NIGHT)]
    if first_night:
        # The version is already on the line; the reason's copy of it would only repeat it.
        return "first night: fallback " + first_night[0].replace(f" ({gate.serving_version}) serves", "")
    return "the gate failed; the champion keeps serving"


def run_demo(settings: Settings, users: int, items: int, days: int) -> dict:
    from recsys.airflow_local import PROJECT_ROOT, airflow_env, prepare
    from recsys.data.generate import GenerateConfig, generate
    from recsys.store.db import connect, resolve_url

    t0 = time.perf_counter()
    cfg = GenerateConfig(n_users=users, n_items=items, days=days, seed=settings.seed)
    print(f"1/3 generating {days} days of events for {users} users and {items} items ...", flush=True)
    gen = generate(Path(settings.lake_root), cfg)
    ds = cfg.end_date.isoformat()
    print(f"    {gen['events']:,} events in {settings.lake_root}", flush=True)

    home = PROJECT_ROOT / "var" / "airflow"
    print(f"2/3 running DAG {DAG_ID} for {ds} with `airflow dags test` (metadata: {home}) ...", flush=True)
    prepare(home)
    env = airflow_env(home, settings_env(settings))
    log_path = home / f"demo-{ds}.log"
    exe = Path(sys.executable).parent / "airflow"
    with open(log_path, "w") as log:
        proc = subprocess.run([str(exe), "dags", "test", DAG_ID, ds], env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or "state=failed" in log_path.read_text():
        tail = "\n".join(log_path.read_text().splitlines()[-25:])
        raise RecsysError(f"DAG run for {ds} failed; full log: {log_path}\n{tail}")

    print("3/3 reading the published batch from PostgreSQL ...", flush=True)
    url = resolve_url(settings)
    with connect(url) as conn:
        batch = conn.execute(
            "SELECT batch_id, ds, model_version, row_count, user_count FROM recsys.current_batch"
        ).fetchone()
        if batch is None:
            raise RecsysError("the DAG finished but no batch is published (see the log: %s)" % log_path)
        sample_user = conn.execute(
            "SELECT user_id FROM recsys.current_recommendations ORDER BY user_id LIMIT 1"
        ).fetchone()[0]
        sample = conn.execute(
            "SELECT rank, item_id, round(score::numeric, 4), reason FROM recsys.current_recommendations"
            " WHERE user_id = %s ORDER BY rank LIMIT 5",
            (sample_user,),
        ).fetchall()
        n_items = conn.execute(
            "SELECT count(DISTINCT item_id) FROM recsys.current_recommendations"
        ).fetchone()[0]
    lake = Lake(Path(settings.lake_root))
    gate = GateResult.read(lake, parse_ds(ds))
    evaluation = EvaluateResult.read(lake, parse_ds(ds))
    seconds = round(time.perf_counter() - t0, 1)

    print()
    print(f"Published batch {batch[0]} for {batch[1]}: {batch[3]:,} rows, {batch[4]:,} users, model {batch[2]}")
    print(f"Serving: {gate.serving_version} ({serving_why(gate)})")
    print(f"Gate: {gate.decision} ({'; '.join(gate.reasons)})")
    print(evaluation.table)
    print(f"\nTop 5 for user {sample_user} (recsys query --user {sample_user}):")
    print(text_table(sample, ("rank", "item_id", "score", "reason")))
    print(f"\nQuery it yourself: psql \"{url}\" -c \"SELECT * FROM recsys.current_recommendations WHERE user_id = '{sample_user}' ORDER BY rank\"")
    print(f"Airflow log: {log_path}   Finished in {seconds}s")
    result = {
        "ds": ds, "rows_published": batch[3], "users": batch[4], "items": n_items,
        "model": gate.serving_version, "decision": gate.decision, "seconds": seconds,
    }
    print(json.dumps(result))
    return result
