"""Airflow on one machine with no setup: SQLite metadata under ./var/airflow, this project's dags/ and plugins/."""

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
            # The recommendation explorer (plugins/recsys_explorer.py) in the api-server's UI.
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
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


def prepare(home: Path, extra: dict | None = None) -> dict:
    """Migrate the metadata database and create the `gpu` pool; idempotent.

    `extra` overrides the environment, e.g. AIRFLOW__DATABASE__SQL_ALCHEMY_CONN from
    `postgres_metadata` instead of SQLite.
    """
    home.mkdir(parents=True, exist_ok=True)
    env = airflow_env(home, extra)
    airflow(["db", "migrate"], env, capture=True)
    airflow(["pools", "set", "gpu", "1", "Training: one model on the accelerator at a time"], env, capture=True)
    return env


# --------------------------------------------------------------------------- local servers
#
# The long-running components of a real deployment (api-server, scheduler, dag-processor) on
# 127.0.0.1, for backfills from the UI, the CLI and the REST API on one machine, and for tests.
# Each component runs in its own process group, so stopping it also stops what it started
# (LocalExecutor workers, task processes, their Spark JVMs) and nothing else.

COMPONENTS = ("api-server", "scheduler", "dag-processor")
METADATA_CONN = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
METADATA_CONN_ASYNC = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"
DEFAULT_USER = "admin"


def postgres_metadata(server_url: str, database: str = "airflow") -> dict:
    """Environment that puts Airflow's metadata in `database` on the server of `server_url`
    (created if missing): the sync URL (psycopg2) and the async one (psycopg 3, already
    installed, instead of Airflow's default asyncpg).

    SQLite serves `airflow dags test` and a UI, but with a scheduler, a dag-processor and the
    api-server writing at once it refuses some writes ("Backfill creation is not supported on
    SQLite under concurrent access"); the project's embedded PostgreSQL has no such limit.
    """
    import re

    from recsys.store.db import connect

    if not re.fullmatch(r"[a-z_][a-z0-9_]*", database):
        raise RecsysError(f"metadata database name {database!r}: use lower-case letters, digits and _")
    with connect(server_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            conn.execute(f"CREATE DATABASE {database}")
    _, _, rest = server_url.partition("://")
    netloc_path, _, query = rest.partition("?")
    base = netloc_path.rsplit("/", 1)[0] if "/" in netloc_path else netloc_path
    tail = f"{base}/{database}" + (f"?{query}" if query else "")
    return {METADATA_CONN: f"postgresql+psycopg2://{tail}", METADATA_CONN_ASYNC: f"postgresql+psycopg://{tail}"}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_env(
    home: Path, port: int, extra: dict | None = None, *, password: str, user: str = DEFAULT_USER,
    use_job_schedule: bool = True, parallelism: int = 2,
) -> dict:
    """Environment shared by every component so that they find each other on 127.0.0.1:`port`.

    The JWT secret must be the same in the scheduler (which signs each task's token) and the
    api-server (whose execution API checks it); it is derived per home so restarts keep it.
    """
    import hashlib
    import json

    home = Path(home).resolve()
    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({user: password}) + "\n")
    passwords.chmod(0o600)
    # 64 bytes each: the JWT signature is HMAC-SHA512 when Airflow guesses the algorithm from a
    # shared secret, and RFC 7518 wants a key at least as long as the hash.
    secret_key = hashlib.sha512(f"api:{home}:{password}".encode()).hexdigest()[:64]
    jwt_secret = hashlib.sha512(f"jwt:{home}:{password}".encode()).hexdigest()[:64]
    base = f"http://127.0.0.1:{port}"
    env = {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{user}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secret_key,
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
        # No scheduled runs when only backfills are wanted (tests, a one-off catch-up).
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(use_job_schedule),
        # A new or edited DAG file shows up within seconds rather than minutes.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    }
    env.update(extra or {})
    return airflow_env(home, env)


class LocalAirflow:
    """api-server, scheduler and dag-processor on 127.0.0.1, started and stopped by this object.

        with LocalAirflow(home, extra_env={"RECSYS_LAKE_ROOT": ...}) as af:
            token = af.token()
            af.api("PATCH", "/api/v2/dags/recsys_nightly", token, json={"is_paused": False})

    `home` must be prepared (`prepare(home)`); logs of each component go to `home/logs/<name>.out`.
    """

    def __init__(
        self, home: Path, extra_env: dict | None = None, *, port: int | None = None,
        components: tuple[str, ...] = COMPONENTS, password: str | None = None, use_job_schedule: bool = True,
        parallelism: int = 2,
    ):
        import secrets

        self.home = Path(home).resolve()
        self.port = port or free_port()
        self.user = DEFAULT_USER
        self.password = password or secrets.token_urlsafe(12)
        self.components = components
        self.env = server_env(
            self.home, self.port, extra_env, password=self.password, user=self.user,
            use_job_schedule=use_job_schedule, parallelism=parallelism,
        )
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalAirflow:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _command(self, name: str) -> list[str]:
        exe = str(Path(sys.executable).parent / "airflow")
        if name == "api-server":
            return [exe, "api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        if name == "scheduler":
            return [exe, "scheduler", "--skip-serve-logs"]
        if name == "dag-processor":
            return [exe, "dag-processor"]
        if name == "triggerer":
            return [exe, "triggerer", "--skip-serve-logs"]
        raise ValueError(f"unknown Airflow component {name!r}")

    def start(self, timeout: float = 240.0) -> None:
        """Start the components and wait until the API answers; RecsysError naming a component that died."""
        import time

        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name in self.components:
            self.logs[name] = logs / f"{name}.out"
            with open(self.logs[name], "ab") as out:
                # Own session = own process group: stop() signals exactly this tree.
                self.procs[name] = subprocess.Popen(
                    self._command(name), env=self.env, stdout=out, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.home,
                )
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            if "api-server" not in self.procs or self._answers():
                return
            if time.monotonic() > deadline:
                raise RecsysError(f"the Airflow api-server did not answer on {self.url} within {timeout:.0f}s\n{self.tail()}")
            time.sleep(1.0)

    def _answers(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RecsysError(f"Airflow {name} exited with code {proc.returncode}\n{self.tail(name)}")

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM each component's process group, SIGKILL what is left after `grace` seconds."""
        import os
        import signal
        import time

        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs.values():
            # Children (task processes, JVMs) may outlive their leader: the group id is still the leader's pid.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if proc.poll() is None:
                proc.wait(timeout=10)

    # --- the REST API -------------------------------------------------------------------------

    def token(self) -> str:
        """A JWT for the REST API from the simple auth manager (POST /auth/token)."""
        import httpx

        r = httpx.post(f"{self.url}/auth/token", json={"username": self.user, "password": self.password}, timeout=30)
        if r.status_code not in (200, 201):
            raise RecsysError(f"POST /auth/token: HTTP {r.status_code}: {r.text[:300]}")
        return r.json()["access_token"]

    def api(self, method: str, path: str, token: str, **kwargs):
        """One REST call; returns the httpx.Response whatever its status."""
        import httpx

        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=kwargs.pop("timeout", 60), **kwargs)

    def tail(self, name: str | None = None, lines: int = 40) -> str:
        """The last lines of the components' logs (one, or all)."""
        names = [name] if name else list(self.logs)
        parts = []
        for n in names:
            path = self.logs.get(n)
            if path and path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(parts)

    def task_logs(self, dag_id: str, run_id: str | None = None, task_ids=None, lines: int = 30) -> str:
        """Tails of the task logs under home/logs/dag_id=<dag_id> (one run and some tasks, or all)."""
        root = self.home / "logs" / f"dag_id={dag_id}"
        if run_id:
            root = root / f"run_id={run_id}"
        parts = []
        for path in sorted(root.rglob("*.log")) if root.exists() else []:
            if task_ids and not any(f"task_id={t}" in path.parts for t in task_ids):
                continue
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(parts) or f"(no task logs under {root})"
