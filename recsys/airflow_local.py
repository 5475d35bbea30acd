"""Airflow on one machine with no setup: SQLite metadata under ./var/airflow, this project's dags/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from recsys.errors import RecsysError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def airflow_env(home: Path, extra: dict | None = None) -> dict:
    """Environment for `airflow` commands; explicit values so a user's own Airflow is not touched."""
    home = Path(home).resolve()
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Two cores: a small pool of parallel tasks keeps Spark and torch from fighting.
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
    )
    env.update(extra or {})
    return env


def airflow(args: list[str], env: dict, capture: bool = False) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "airflow"
    proc = subprocess.run([str(exe), *args], env=env, text=True, capture_output=capture)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] if capture else []
        raise RecsysError(f"airflow {' '.join(args)} failed (exit {proc.returncode})" + (f": {tail[0]}" if tail else ""))
    return proc


def prepare(home: Path) -> dict:
    """Migrate the metadata database and create the `gpu` pool; idempotent."""
    home.mkdir(parents=True, exist_ok=True)
    env = airflow_env(home)
    airflow(["db", "migrate"], env, capture=True)
    airflow(["pools", "set", "gpu", "1", "Training: one model on the accelerator at a time"], env, capture=True)
    return env
