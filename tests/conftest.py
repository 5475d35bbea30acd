"""Shared fixtures: one real local SparkSession and one real PostgreSQL server per test session."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest

from recsys import runtime
from recsys.airflow_local import airflow_env

runtime.configure()
# py4j logs from a finaliser after pytest closed its streams; it is noise, not a failure.
logging.getLogger("py4j").setLevel(logging.ERROR)
# Tests never read a developer's settings nor touch a developer's Airflow.
for _key in [k for k in os.environ if k.startswith(("RECSYS_", "AIRFLOW_", "AIRFLOW__")) and k not in ("RECSYS_CHROMIUM",)]:
    del os.environ[_key]
# Airflow reads its configuration at import time, so its home is fixed before any test imports it.
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="recsys-airflow-"))
os.environ.update({k: v for k, v in airflow_env(AIRFLOW_HOME).items() if k.startswith("AIRFLOW")})


@pytest.fixture(scope="session")
def spark():
    from spark_jobs.session import get_spark

    session = get_spark("local[2]", app_name="recsys-tests", driver_memory="1g")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory) -> str:
    """A real PostgreSQL server (embedded binaries) in a temporary folder, deleted afterwards."""
    from recsys.store.embedded import ensure_server

    root = tmp_path_factory.mktemp("pg")
    return ensure_server(Path(root) / "data", cleanup_mode="delete")


@pytest.fixture
def lake_root(tmp_path) -> Path:
    root = tmp_path / "lake"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """A migrated Airflow metadata database (SQLite) with the `gpu` pool."""
    from recsys.airflow_local import prepare

    prepare(AIRFLOW_HOME)
    return AIRFLOW_HOME


# Run first: under `make test`'s two xdist workers (a file each at a time, in collection order)
# the minutes-long backfill then runs beside the other files instead of after them.
RUN_FIRST = ("test_backfill.py",)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name not in RUN_FIRST)
