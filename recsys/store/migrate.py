"""Schema migrations: numbered, append-only SQL files in `sql/migrations/`, applied in order.

Each file `NNNN_name.sql` starts with a `--` header line saying what it changes and why, and
runs in its own transaction. `recsys.schema_migrations` records what ran with a checksum of the
file, so an edited migration is refused instead of silently diverging from the databases that
already ran it. A session advisory lock serialises concurrent migrators of one database.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from recsys.errors import DatabaseError
from recsys.store.db import SQL_DIR, connect, one_line

MIGRATIONS_DIR = SQL_DIR / "migrations"
SCHEMA = "recsys"
# Any fixed bigint; only other callers of pg_advisory_lock with the same key contend.
MIGRATE_LOCK_KEY = 7_301_154_210_114_233
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9][a-z0-9_]*)\.sql$")

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS recsys;
CREATE TABLE IF NOT EXISTS recsys.schema_migrations (
    version    integer NOT NULL,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schema_migrations_pkey PRIMARY KEY (version)
);
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # file stem, e.g. "0002_create_batches"
    path: Path
    checksum: str  # sha256 of the file's bytes
    sql: str


def scan(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in `folder`, ordered by number; raises on bad names, duplicates, no header."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatabaseError(f"migrations folder {folder} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise DatabaseError(f"migration file {path.name}: name must be NNNN_lowercase_name.sql")
        data = path.read_bytes()
        sql = data.decode("utf-8")
        if not sql.lstrip("\ufeff").startswith("--"):
            raise DatabaseError(f"migration file {path.name}: must start with a '--' header line (what and why)")
        version = int(match.group(1))
        if version in found:
            raise DatabaseError(
                f"migration number {match.group(1)} is used twice: {found[version].path.name} and {path.name}"
            )
        found[version] = Migration(version, path.stem, path, hashlib.sha256(data).hexdigest(), sql)
    return [found[v] for v in sorted(found)]


def _applied_rows(conn) -> dict[int, tuple[str, str]]:
    rows = conn.execute("SELECT version, name, checksum FROM recsys.schema_migrations ORDER BY version").fetchall()
    return {version: (name, checksum) for version, name, checksum in rows}


def _table_exists(conn) -> bool:
    return conn.execute("SELECT to_regclass('recsys.schema_migrations') IS NOT NULL").fetchone()[0]


def _plan(files: list[Migration], done: dict[int, tuple[str, str]]) -> list[Migration]:
    """Pending files; raises if an applied file changed or vanished, or a new file sits below applied ones."""
    by_version = {m.version: m for m in files}
    for version, (name, checksum) in done.items():
        current = by_version.get(version)
        if current is None:
            raise DatabaseError(
                f"migration {name} was applied but its file {name}.sql is missing; migrations are append-only"
            )
        if current.checksum != checksum:
            raise DatabaseError(
                f"migration file {current.path.name} changed after it was applied (checksum differs); "
                "migrations are append-only: revert the edit and add a new numbered file"
            )
    todo = [m for m in files if m.version not in done]
    if todo and done and todo[0].version < max(done):
        latest = done[max(done)][0]
        raise DatabaseError(
            f"migration file {todo[0].path.name} is numbered below the already applied {latest}; "
            "give it the next free number"
        )
    return todo


def migrate(url: str, folder: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; return the names applied."""
    files = scan(folder)
    conn = connect(url, autocommit=True)
    applied_now: list[str] = []
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
        try:
            with conn.transaction():
                conn.execute(_BOOTSTRAP)
            todo = _plan(files, _applied_rows(conn))
            for m in todo:
                try:
                    with conn.transaction():
                        conn.execute(m.sql)
                        conn.execute(
                            "INSERT INTO recsys.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                            (m.version, m.name, m.checksum),
                        )
                except DatabaseError:
                    raise
                except Exception as err:
                    raise DatabaseError(f"migration {m.path.name} failed: {one_line(err)}") from None
                applied_now.append(m.name)
        finally:
            if not conn.closed and not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK_KEY,))
    except DatabaseError:
        raise
    except Exception as err:
        raise DatabaseError(f"migrating {SCHEMA}: {one_line(err)}") from None
    finally:
        conn.close()
    return applied_now


def applied(url: str) -> list[str]:
    """Names of the migrations recorded as applied, in order (empty for a fresh database)."""
    with connect(url) as conn:
        if not _table_exists(conn):
            return []
        return [name for _, (name, _) in sorted(_applied_rows(conn).items())]


def pending(url: str, folder: Path = MIGRATIONS_DIR) -> list[str]:
    """Names of the migrations `migrate` would apply; raises as `migrate` would on a tampered history."""
    files = scan(folder)
    with connect(url) as conn:
        done = _applied_rows(conn) if _table_exists(conn) else {}
    return [m.name for m in _plan(files, done)]
