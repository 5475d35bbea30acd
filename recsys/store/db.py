"""Reaching the recommendation store: which server, a psycopg 3 connection, a SQLAlchemy URL.

Every failure to connect becomes a `DatabaseError` with a one-line cause that names the server
(password masked), so the CLI and Airflow show something a person can act on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from recsys.errors import DatabaseError

if TYPE_CHECKING:
    import psycopg

    from recsys.config import Settings

# Long enough for a busy server, short enough that a wrong host fails a task quickly.
CONNECT_TIMEOUT_S = 5
SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
QUERIES_DIR = SQL_DIR / "queries"


def resolve_url(settings: Settings) -> str:
    """The configured `database_url`, else the embedded server in `pg_data` (started if needed)."""
    if settings.database_url:
        return settings.database_url
    from recsys.store.embedded import ensure_server

    return ensure_server(settings.pg_data)


def mask_url(url: str) -> str:
    """`url` with any password replaced by `***`, safe to print or log."""
    if "://" not in url:  # key=value conninfo
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, password = userinfo.partition(":")
        if sep and password:
            netloc = f"{user}:***@{hostport}"
    query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def one_line(err: BaseException) -> str:
    """An exception's message folded onto one line (libpq adds hints on indented lines)."""
    text = str(err).strip() or type(err).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def connect(url: str, **kwargs: Any) -> psycopg.Connection:
    """A psycopg 3 connection (not autocommit); `DatabaseError` with a one-line cause if unreachable.

    A `connect_timeout` in the URL wins over the default of CONNECT_TIMEOUT_S.
    """
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError as err:
        raise DatabaseError(f"invalid database URL {mask_url(url)}: {one_line(err)}") from None
    kwargs.setdefault("application_name", "recsys")
    if "connect_timeout" not in given:
        kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    try:
        return psycopg.connect(url, **kwargs)
    except psycopg.Error as err:
        raise DatabaseError(f"cannot connect to PostgreSQL at {mask_url(url)}: {one_line(err)}") from None


def sqlalchemy_url(url: str) -> str:
    """`url` for SQLAlchemy/pandas with the psycopg 3 driver (`postgresql+psycopg://...`)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith(("postgresql", "postgres")):
        raise DatabaseError(f"not a postgresql:// URL: {mask_url(url)}")
    return f"postgresql+psycopg://{rest}"


def read_query(name: str) -> str:
    """The text of `sql/queries/<name>.sql` (psycopg `%(param)s` placeholders)."""
    path = QUERIES_DIR / f"{name}.sql"
    if not path.is_file():
        raise DatabaseError(f"no such query {name!r} in {QUERIES_DIR}")
    return path.read_text()
