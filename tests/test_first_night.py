"""The first night: no champion yet and the challenger fails the gate, so a baseline serves.

The pipeline tests run on a generated log on which item co-occurrence ranks well ahead of
popularity (seed 0: NDCG@10 about 0.21 against 0.14), against real Spark and PostgreSQL;
tests/test_pipeline.py covers a log on which popularity ranks ahead.
"""

from __future__ import annotations

import math

import psycopg
import pytest

from recsys.config import load_settings
from recsys.data.generate import GenerateConfig, generate
from recsys.demo import serving_why
from recsys.pipeline import stages
from recsys.pipeline.results import GateResult
from recsys.pipeline.run import run_pipeline
from tests.helpers import TINY, fresh_database

DS = TINY["end_date"]


def _m(itemknn: float | None, popularity: float) -> dict:
    metrics = {"challenger": {"ndcg@10": 0.01}, "popularity": {"ndcg@10": popularity}}
    if itemknn is not None:
        metrics["itemknn"] = {"ndcg@10": itemknn}
    return metrics


@pytest.mark.parametrize(
    "metrics,kind",
    [
        (_m(0.0963, 0.0904), "cooc"),
        (_m(0.0904, 0.0904), "cooc"),  # at least as good is good enough: it ranks by behaviour
        (_m(0.0800, 0.0904), "popularity"),
        (_m(None, 0.0904), "popularity"),  # an evaluation without the baseline proves nothing
        (_m(math.nan, 0.0904), "popularity"),
    ],
)
def test_fallback_kind_follows_the_baselines_ndcg(metrics, kind):
    assert stages.fallback_kind(metrics) == kind


@pytest.mark.parametrize(
    "gate,why",
    [
        ({"decision": "pass", "promote": True, "reasons": [], "serving_version": "mtrl-a"}, "the challenger passed the gate"),
        ({"decision": "fail", "promote": False, "reasons": ["x"], "serving_version": "mtrl-b"}, "the gate failed; the champion keeps serving"),
        ({"decision": "forced", "promote": True, "reasons": [], "serving_version": "mtrl-a"}, "the challenger failed the gate and was promoted by force"),
        (
            {
                "decision": "fail", "promote": False, "serving_version": "cooc-2026-11-27-abcd1234",
                "reasons": ["x", stages.FIRST_NIGHT + "item co-occurrence (cooc-2026-11-27-abcd1234) serves, ndcg@10 0.0963 >= popularity 0.0904, until a model passes the gate"],
            },
            "first night: fallback item co-occurrence, ndcg@10 0.0963 >= popularity 0.0904, until a model passes the gate",
        ),
    ],
)
def test_demo_says_why_the_serving_model_serves(gate, why):
    assert serving_why(GateResult(**gate)) == why


@pytest.fixture(scope="module")
def featured(tmp_path_factory, pg_url, spark):
    """Validated features of the log where item co-occurrence beats popularity."""
    lake = tmp_path_factory.mktemp("lake")
    generate(lake, GenerateConfig(**{**TINY, "seed": 0}))
    # No model can beat popularity by 100x, so every challenger fails the gate.
    settings = load_settings(
        lake_root=lake, database_url=fresh_database(pg_url), top_k=5, spark_master="local[2]",
        model_epochs=1, gate_margin_vs_popularity=100.0,
    )  # fmt: skip
    run_pipeline(DS, settings, stages="validate,features")
    return settings


def test_failed_first_night_serves_item_cooccurrence_when_it_beats_popularity(featured, pg_url):
    settings = featured.model_copy(update={"database_url": fresh_database(pg_url)})
    assert settings.model_kind == "mtrl"  # the default challenger
    summary = run_pipeline(DS, settings, stages="train,evaluate,gate,score,publish")
    metrics, gate = summary["stages"]["evaluate"].metrics, summary["stages"]["gate"]
    knn, pop = metrics["itemknn"]["ndcg@10"], metrics["popularity"]["ndcg@10"]
    assert knn > pop  # what this log was chosen for
    serving = gate.serving_version
    assert gate.decision == "fail" and serving.startswith("cooc-")
    assert gate.reasons[-1] == (
        f"{stages.FIRST_NIGHT}item co-occurrence ({serving}) serves, ndcg@10 {knn:.4f} >= popularity {pop:.4f}, "
        "until a model passes the gate"
    )
    with psycopg.connect(settings.database_url) as conn:
        status = dict(conn.execute("SELECT kind, status FROM recsys.models").fetchall())
        champion = conn.execute("SELECT model_version FROM recsys.models WHERE status = 'champion'").fetchone()[0]
        published = conn.execute("SELECT model_version FROM recsys.current_batch").fetchone()[0]
        reasons = {r[0] for r in conn.execute("SELECT DISTINCT reason FROM recsys.current_recommendations").fetchall()}
    assert status == {"mtrl": "rejected", "cooc": "champion"}
    assert champion == published == serving
    assert any(r.startswith("because of ") for r in reasons)  # co-occurrence explains its picks


def test_failed_cooccurrence_challenger_falls_back_to_popularity(featured, pg_url):
    settings = featured.model_copy(update={"database_url": fresh_database(pg_url), "model_kind": "cooc"})
    summary = run_pipeline(DS, settings, stages="train,evaluate,gate")
    gate = summary["stages"]["gate"]
    serving = gate.serving_version
    assert gate.decision == "fail" and serving.startswith("popularity-")
    assert gate.reasons[-1] == (
        f"{stages.FIRST_NIGHT}popularity ({serving}) serves, the challenger is item co-occurrence itself, "
        "until a model passes the gate"
    )
    with psycopg.connect(settings.database_url) as conn:
        status = dict(conn.execute("SELECT kind, status FROM recsys.models").fetchall())
    assert status == {"cooc": "rejected", "popularity": "champion"}
