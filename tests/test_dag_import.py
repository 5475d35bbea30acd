"""The DAG file parses without errors and keeps heavy libraries out of parse time."""

import subprocess
import sys
from pathlib import Path

DAGS = Path(__file__).resolve().parent.parent / "dags"
HEAVY = ("torch", "pyspark", "pandas", "transformers", "recsys.pipeline", "scipy")


def test_dag_bag_has_no_import_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    dag = bag.dags.get("recsys_nightly")
    assert dag is not None
    assert set(dag.task_ids) == {
        "validate", "features", "encode", "train", "evaluate", "gate", "promote_challenger", "keep_champion",
        "score", "publish", "retention",
    }
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert dag.get_task("train").pool == "gpu"
    assert all(t.retries >= 1 for t in dag.tasks)
    assert dag.params["top_k"] == 50


def test_no_heavy_imports_at_parse_time():
    code = (
        "import runpy, sys; runpy.run_path(%r);"
        "bad = [m for m in %r if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    ) % (str(DAGS / "recsys_nightly.py"), HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
