"""Migrations and connections against a real PostgreSQL; each test gets its own fresh database."""

from __future__ import annotations

import shutil
import threading
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from recsys.config import Settings
from recsys.errors import DatabaseError
from recsys.store import db as store_db
from recsys.store.db import connect, mask_url, resolve_url, sqlalchemy_url
from recsys.store.migrate import MIGRATIONS_DIR, applied, migrate, pending, scan

ALL = [
    "0001_create_roles",
    "0002_create_batches",
    "0003_create_recommendations",
    "0004_create_models",
    "0005_create_evaluations",
    "0006_create_current_batch_view",
    "0007_create_current_recommendations_view",
    "0008_create_batch_history_view",
    "0009_grant_writer_and_reader",
    "0010_create_recommendation_lists",
    "0011_current_recommendations_from_lists",
    "0012_drop_row_per_rank_recommendations",
    "0013_create_similar_item_lists",
    "0014_create_current_similar_items_view",
    "0015_create_previous_recommendations_view",
    "0016_grant_reader_new_views",
    "0017_create_fallback_items",
    "0018_create_current_fallback_view",
]


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@pytest.fixture
def fresh_db(pg_url):
    """URL of a new, empty database on the session's server; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield _with_db(pg_url, name)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _write(folder, name, sql):
    (folder / name).write_text(sql)


# --------------------------------------------------------------------------- migrate


def test_migrate_applies_all_in_order_then_nothing(fresh_db):
    assert applied(fresh_db) == []
    assert pending(fresh_db) == ALL
    assert migrate(fresh_db) == ALL
    assert migrate(fresh_db) == []
    assert pending(fresh_db) == []
    assert applied(fresh_db) == ALL


def test_tables_views_roles_and_named_constraints_exist(fresh_db):
    migrate(fresh_db)
    with psycopg.connect(fresh_db) as conn:
        kinds = dict(
            conn.execute(
                "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'recsys' AND c.relkind IN ('r', 'p', 'v')"
            ).fetchall()
        )
        constraints = {
            name
            for (name,) in conn.execute(
                "SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                "WHERE n.nspname = 'recsys'"
            )
        }
        roles = dict(
            conn.execute(
                "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN ('recsys_writer', 'recsys_reader')"
            ).fetchall()
        )
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'batches'").fetchone()[0]
    assert kinds == {
        "schema_migrations": "r",
        "batches": "r",
        "recommendation_lists": "p",
        "similar_item_lists": "p",
        "fallback_items": "r",
        "models": "r",
        "evaluations": "r",
        "current_batch": "v",
        "current_recommendations": "v",
        "current_similar_items": "v",
        "current_fallback": "v",
        "previous_batch": "v",
        "previous_recommendations": "v",
        "batch_history": "v",
    }
    assert {
        "batches_pkey",
        "batches_status_check",
        "recommendation_lists_pkey",
        "similar_item_lists_pkey",
        "fallback_items_pkey",
        "fallback_items_batch_id_fkey",
        "models_pkey",
        "models_status_check",
        "evaluations_pkey",
        "evaluations_model_version_fkey",
        "evaluations_decision_check",
        "schema_migrations_pkey",
    } <= constraints
    assert roles == {"recsys_writer": False, "recsys_reader": False}
    assert owner == "recsys_writer"


def test_constraints_reject_bad_rows(fresh_db):
    migrate(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="batches_status_check"):
            conn.execute("INSERT INTO recsys.batches (ds, status) VALUES ('2024-01-01', 'live')")
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="evaluations_model_version_fkey"):
            conn.execute(
                "INSERT INTO recsys.evaluations (ds, model_version, metrics, decision) "
                "VALUES ('2024-01-01', 'nope', '{}', 'pass')"
            )
        conn.execute("INSERT INTO recsys.models (model_version, ds, kind) VALUES ('m1', '2024-01-01', 'cooc')")
        with pytest.raises(psycopg.errors.CheckViolation, match="evaluations_forced_by_check"):
            conn.execute(
                "INSERT INTO recsys.evaluations (ds, model_version, metrics, decision) "
                "VALUES ('2024-01-01', 'm1', '{}', 'forced')"
            )
        # Two published batches for one date would make "the current batch" ambiguous.
        conn.execute("INSERT INTO recsys.batches (ds, status, published_at) VALUES ('2024-01-01', 'published', now())")
        with pytest.raises(psycopg.errors.UniqueViolation, match="batches_ds_published_key"):
            conn.execute(
                "INSERT INTO recsys.batches (ds, status, published_at) VALUES ('2024-01-01', 'published', now())"
            )


def test_changed_checksum_of_applied_file_raises_naming_it(fresh_db):
    migrate(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("UPDATE recsys.schema_migrations SET checksum = 'edited' WHERE version = 2")
    with pytest.raises(DatabaseError, match=r"0002_create_batches\.sql changed after it was applied"):
        migrate(fresh_db)
    with pytest.raises(DatabaseError, match=r"0002_create_batches\.sql"):
        pending(fresh_db)


def test_new_file_numbered_below_an_applied_one_raises(fresh_db, tmp_path):
    _write(tmp_path, "0001_a.sql", "-- a\nCREATE TABLE recsys.a (x int);\n")
    _write(tmp_path, "0003_c.sql", "-- c\nCREATE TABLE recsys.c (x int);\n")
    assert migrate(fresh_db, tmp_path) == ["0001_a", "0003_c"]
    _write(tmp_path, "0002_b.sql", "-- b\nCREATE TABLE recsys.b (x int);\n")
    with pytest.raises(DatabaseError, match=r"0002_b\.sql is numbered below the already applied 0003_c"):
        migrate(fresh_db, tmp_path)


def test_failing_migration_rolls_back_alone_and_names_the_file(fresh_db, tmp_path):
    _write(tmp_path, "0001_ok.sql", "-- ok\nCREATE TABLE recsys.ok (x int);\n")
    _write(tmp_path, "0002_broken.sql", "-- broken\nCREATE TABLE recsys.half (x int);\nSELECT 1/0;\n")
    with pytest.raises(DatabaseError, match=r"migration 0002_broken\.sql failed: division by zero") as err:
        migrate(fresh_db, tmp_path)
    assert "\n" not in str(err.value)
    assert applied(fresh_db) == ["0001_ok"]
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT to_regclass('recsys.ok') IS NOT NULL").fetchone()[0]
        assert conn.execute("SELECT to_regclass('recsys.half') IS NULL").fetchone()[0]


def test_concurrent_migrators_apply_each_file_once(fresh_db):
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run():
        try:
            results.append(migrate(fresh_db))
        except BaseException as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results, key=len) == [[], [], ALL]


def test_migrate_recreates_a_dropped_schema(fresh_db):
    migrate(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("DROP SCHEMA recsys CASCADE")
    # Roles are cluster-wide and already exist; their migration must still succeed.
    assert migrate(fresh_db) == ALL


# --------------------------------------------------------------------------- file scanner


def test_scan_of_the_project_folder_is_contiguous_with_headers():
    files = scan(MIGRATIONS_DIR)
    assert [m.name for m in files] == ALL
    assert [m.version for m in files] == list(range(1, len(files) + 1))
    assert all(m.sql.splitlines()[0].startswith("-- ") and len(m.sql.splitlines()[0]) > 20 for m in files)


def test_scan_rejects_duplicate_numbers(tmp_path):
    _write(tmp_path, "0001_first.sql", "-- first\nSELECT 1;\n")
    _write(tmp_path, "0002_second.sql", "-- second\nSELECT 1;\n")
    _write(tmp_path, "0002_other.sql", "-- other\nSELECT 1;\n")
    with pytest.raises(DatabaseError, match=r"number 0002 is used twice: 0002_other\.sql and 0002_second\.sql"):
        scan(tmp_path)


def test_scan_rejects_missing_header_and_bad_names(tmp_path):
    _write(tmp_path, "0001_noheader.sql", "SELECT 1;\n")
    with pytest.raises(DatabaseError, match=r"0001_noheader\.sql: must start with a '--' header"):
        scan(tmp_path)
    (tmp_path / "0001_noheader.sql").unlink()
    _write(tmp_path, "1_short.sql", "-- short\nSELECT 1;\n")
    with pytest.raises(DatabaseError, match=r"1_short\.sql: name must be NNNN_lowercase_name\.sql"):
        scan(tmp_path)


def test_scan_orders_by_number(tmp_path):
    for name in ["0010_j.sql", "0002_b.sql", "0001_a.sql"]:
        _write(tmp_path, name, "-- x\nSELECT 1;\n")
    assert [m.name for m in scan(tmp_path)] == ["0001_a", "0002_b", "0010_j"]


def test_applied_file_removed_from_disk_raises(fresh_db, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(MIGRATIONS_DIR, folder)
    migrate(fresh_db, folder)
    (folder / "0009_grant_writer_and_reader.sql").unlink()
    with pytest.raises(DatabaseError, match=r"0009_grant_writer_and_reader was applied but its file"):
        migrate(fresh_db, folder)


# --------------------------------------------------------------------------- connections


def test_unreachable_server_raises_one_line_naming_it():
    url = "postgresql://nobody@/recsys?host=/nonexistent&connect_timeout=2"
    with pytest.raises(DatabaseError) as err:
        connect(url)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("cannot connect to PostgreSQL at postgresql://nobody@/recsys?host=/nonexistent")
    assert "/nonexistent/.s.PGSQL.5432" in message  # libpq's own cause survives, folded


def test_unreachable_server_message_masks_the_password():
    with pytest.raises(DatabaseError) as err:
        connect("postgresql://app:s3cret@/recsys?host=/nonexistent&connect_timeout=2")
    assert "s3cret" not in str(err.value)
    assert "app:***@" in str(err.value)


def test_mask_url_forms():
    assert mask_url("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert mask_url("postgresql://u@h/d?password=pw&sslmode=require") == (
        "postgresql://u@h/d?password=***&sslmode=require"
    )
    assert mask_url("host=h user=u password=pw dbname=d") == "host=h user=u password=*** dbname=d"
    assert mask_url("postgresql://postgres:@/recsys?host=/tmp/x") == "postgresql://postgres:@/recsys?host=/tmp/x"


def test_connect_returns_a_working_psycopg_connection(pg_url):
    with connect(pg_url) as conn:
        assert conn.execute("SELECT current_setting('application_name')").fetchone()[0] == "recsys"
        assert conn.execute("SELECT current_setting('server_version_num')::int").fetchone()[0] >= 180000


def test_sqlalchemy_url_works_with_pandas(pg_url):
    import pandas as pd
    import sqlalchemy

    assert sqlalchemy_url("postgresql://u:p@h/d") == "postgresql+psycopg://u:p@h/d"
    assert sqlalchemy_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    engine = sqlalchemy.create_engine(sqlalchemy_url(pg_url))
    try:
        frame = pd.read_sql("SELECT 41 + 1 AS answer", engine)
    finally:
        engine.dispose()
    assert frame["answer"].tolist() == [42]
    with pytest.raises(DatabaseError, match="not a postgresql:// URL"):
        sqlalchemy_url("mysql://u@h/d")


def test_resolve_url_prefers_database_url_else_the_embedded_server(tmp_path, monkeypatch):
    assert resolve_url(Settings(database_url="postgresql://u@h/d")) == "postgresql://u@h/d"
    started = []

    def fake_ensure_server(pg_data):
        started.append(pg_data)
        return "postgresql://postgres:@/recsys?host=/x"

    monkeypatch.setattr("recsys.store.embedded.ensure_server", fake_ensure_server)
    assert resolve_url(Settings(pg_data=tmp_path / "pg")) == "postgresql://postgres:@/recsys?host=/x"
    assert started == [tmp_path / "pg"]


def test_read_query_names_a_missing_query():
    assert "current_recommendations" in store_db.read_query("top_k_for_user")
    with pytest.raises(DatabaseError, match="no such query 'nope'"):
        store_db.read_query("nope")


def test_upgrade_converts_row_per_rank_batches_to_lists(fresh_db, tmp_path):
    """A store migrated up to 0009 with batches in the old layout keeps serving them after 0010 and later."""
    old = tmp_path / "old"
    old.mkdir()
    for m in scan(MIGRATIONS_DIR)[:9]:
        shutil.copy(m.path, old / m.path.name)
    migrate(fresh_db, old)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        for b, ds in ((1, "2024-01-01"), (2, "2024-01-02")):
            conn.execute(
                "INSERT INTO recsys.batches (ds, status, published_at, k) VALUES (%s, 'published', now(), 2)", (ds,)
            )
            conn.execute(
                f"CREATE TABLE recsys.recommendations_b{b} PARTITION OF recsys.recommendations FOR VALUES IN ({b})"
            )
            conn.execute(
                f"INSERT INTO recsys.recommendations VALUES ({b}, 'u1', 2, 'b{b}', 0.5, NULL), "
                f"({b}, 'u1', 1, 'a{b}', 0.9, 'x'), ({b}, 'u2', 1, 'c', 0.1, 'p')"
            )
        before = conn.execute("SELECT * FROM recsys.current_recommendations ORDER BY user_id, rank").fetchall()
    assert migrate(fresh_db) == ALL[9:]
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        after = conn.execute("SELECT * FROM recsys.current_recommendations ORDER BY user_id, rank").fetchall()
        previous = conn.execute(
            "SELECT user_id, rank, item_id FROM recsys.previous_recommendations ORDER BY 1, 2"
        ).fetchall()
        tables = [r for (r,) in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'recsys'::regnamespace "
            "AND relname LIKE 'recommendation%' AND relkind IN ('r', 'p') ORDER BY 1"
        )]
    assert after == before and len(after) == 3
    assert previous == [("u1", 1, "a1"), ("u1", 2, "b1"), ("u2", 1, "c")]
    assert tables == ["recommendation_lists", "recommendation_lists_b1", "recommendation_lists_b2"]
