"""The whole pipeline without Airflow on a tiny generated log, against real Spark and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import psycopg
import pytest

from recsys.config import load_settings
from recsys.data.generate import GenerateConfig, generate
from recsys.errors import ConfigError, DatabaseError, InputError
from recsys.lake import BEFORE_TRAIN, Lake
from recsys.pipeline.run import run_pipeline
from recsys.store.db import read_query
from tests.helpers import TINY, fresh_database, published

DS = TINY["end_date"]


@pytest.fixture(scope="module")
def ran(tmp_path_factory, pg_url, spark):
    lake = tmp_path_factory.mktemp("lake")
    generate(lake, GenerateConfig(**TINY))
    settings = load_settings(
        lake_root=lake, database_url=fresh_database(pg_url), top_k=5, spark_master="local[2]",
        model_kind="mtrl", model_epochs=3,
    )  # fmt: skip
    summary = run_pipeline(DS, settings)
    return settings, summary


def test_run_publishes_complete_lists(ran):
    settings, summary = ran
    rows = published(settings.database_url)
    users = summary["stages"]["score"].users
    assert users > 50
    assert summary["stages"]["publish"].rows == len(rows)
    per_user = {}
    for user, rank, item, score in rows:
        per_user.setdefault(user, []).append((rank, item, score))
    assert len(per_user) == users
    for lst in per_user.values():
        assert [r for r, _, _ in lst] == list(range(1, len(lst) + 1))
        assert len({i for _, i, _ in lst}) == len(lst)
        assert len(lst) == 5
    # A user not in tonight's lists gets the night's popular items through the app's query.
    assert summary["stages"]["publish"].fallback_rows == 5
    with psycopg.connect(settings.database_url) as conn:
        fallback = conn.execute(read_query("top_k_for_user"), {"user_id": "a-new-user", "k": 5}).fetchall()
    assert [r[2] for r in fallback] == [1, 2, 3, 4, 5] and {r[3] for r in fallback} == {"popular"}


def test_every_stage_left_a_manifest(ran):
    settings, summary = ran
    run_dir = Lake(settings.lake_root).run_dir(DS)
    for stage in summary["stages"]:
        assert (run_dir / f"{stage}.json").exists(), stage
    # tiny log, three epochs: the network stays below popularity and the first night fails
    assert summary["stages"]["gate"].decision == "fail"
    assert summary["stages"]["gate"].serving_version.startswith("popularity-")


def test_training_gets_what_the_night_window_leaves(ran):
    settings, summary = ran
    # a first night: the default hour less tonight's stages before training and a tenth kept for those after it
    before = sum(summary["stages"][stage].seconds for stage in BEFORE_TRAIN)
    train = summary["stages"]["train"]
    assert train.budget_seconds == round(3600 - before - 360, 1)
    assert train.budget_basis.startswith("night window 60 min") and "no earlier night" in train.budget_basis


def test_rerun_replaces_the_date_without_duplicates(ran):
    settings, first = ran
    before = published(settings.database_url)
    again = run_pipeline(DS, settings, stages="score,publish")
    after = published(settings.database_url)
    assert again["stages"]["publish"].batch_id != first["stages"]["publish"].batch_id
    assert sorted(before) == sorted(after)
    with psycopg.connect(settings.database_url) as conn:
        statuses = conn.execute("SELECT status, count(*) FROM recsys.batches WHERE ds = %s GROUP BY status", (DS,)).fetchall()
    assert dict(statuses)["published"] == 1


def test_missing_raw_partition_fails_naming_it_and_keeps_published(ran):
    settings, _ = ran
    before = published(settings.database_url)
    missing_day = DS + dt.timedelta(days=1)
    with pytest.raises(InputError) as err:
        run_pipeline(missing_day, settings)
    assert f"date={missing_day.isoformat()}" in str(err.value) and "\n" not in str(err.value)
    assert published(settings.database_url) == before


def test_unreadable_partition_fails_and_keeps_published(ran, tmp_path):
    settings, _ = ran
    before = published(settings.database_url)
    lake = Lake(settings.lake_root)
    day = DS + dt.timedelta(days=2)
    part = lake.events_partition(day)
    part.mkdir(parents=True)
    (part / "part-0.parquet").write_bytes(b"this is not parquet")
    try:
        with pytest.raises(InputError) as err:
            run_pipeline(day, settings)
        assert "part-0.parquet" in str(err.value) or f"date={day.isoformat()}" in str(err.value)
    finally:
        shutil.rmtree(part)
    assert published(settings.database_url) == before


def test_unreachable_database_fails_with_one_line(ran):
    settings, _ = ran
    bad = settings.model_copy(update={"database_url": "postgresql://nobody@/recsys?host=/nonexistent&connect_timeout=2"})
    with pytest.raises(DatabaseError) as err:
        run_pipeline(DS, bad, stages="publish")
    assert "\n" not in str(err.value)
    assert published(settings.database_url)


def test_bad_setting_value_names_the_setting(monkeypatch):
    monkeypatch.setenv("RECSYS_TOP_K", "-3")
    with pytest.raises(ConfigError, match="RECSYS_TOP_K"):
        load_settings()


def test_first_night_failing_gate_serves_popularity_when_it_beats_cooccurrence(ran, pg_url):
    from recsys.pipeline.stages import FIRST_NIGHT

    settings, _ = ran
    strict = settings.model_copy(update={"database_url": fresh_database(pg_url), "gate_margin_vs_popularity": 10.0})
    summary = run_pipeline(DS, strict, stages="train,evaluate,gate,score,publish")
    metrics, gate = summary["stages"]["evaluate"].metrics, summary["stages"]["gate"]
    knn, pop = metrics["itemknn"]["ndcg@10"], metrics["popularity"]["ndcg@10"]
    assert knn < pop  # on this log; tests/test_first_night.py has one where co-occurrence wins
    serving = gate.serving_version
    assert gate.decision == "fail" and serving.startswith("popularity-")
    assert gate.reasons[-1] == (
        f"{FIRST_NIGHT}popularity ({serving}) serves, item co-occurrence ndcg@10 {knn:.4f} < popularity {pop:.4f}, "
        "until a model passes the gate"
    )
    with psycopg.connect(strict.database_url) as conn:
        status = dict(conn.execute("SELECT kind, status FROM recsys.models").fetchall())
        reasons = {r[0] for r in conn.execute("SELECT DISTINCT reason FROM recsys.current_recommendations").fetchall()}
    assert status == {"mtrl": "rejected", "popularity": "champion"}
    assert reasons == {"popular"}


def test_forced_promotion_is_recorded(ran):
    from recsys.pipeline import stages

    settings, _ = ran
    strict = settings.model_copy(update={"gate_margin_vs_popularity": 10.0})
    result = stages.gate(DS, strict, force_promote=True, forced_by="test-operator")
    assert result.decision == "forced" and result.promote
    assert result.reasons[0].startswith("forced promotion despite")
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT decision, forced_by FROM recsys.evaluations WHERE ds = %s ORDER BY evaluation_id DESC LIMIT 1", (DS,)
        ).fetchone()
    assert row == ("forced", "test-operator")
    assert Path(result.report).exists()
