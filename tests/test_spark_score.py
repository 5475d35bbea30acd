"""RECSYS_SCORE_ENGINE=spark: the Spark score job (spark_jobs/score.py) writes exactly the lists the
in-process scorer writes, on a real local SparkSession."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.config import load_settings
from recsys.data.generate import GenerateConfig, generate
from recsys.pipeline import stages
from recsys.pipeline.run import run_pipeline
from recsys.serve.batch import score_all_users
from spark_jobs.score import BLOCK, POS, SparkEngine, _whole_blocks
from tests.helpers import TINY, fresh_database
from tests.test_scoring import DS as HAND_DS
from tests.test_scoring import _fit, lake  # noqa: F401  (the hand-made lake fixture)

DS = TINY["end_date"]


def _rows(path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def assert_same_lists(local: list[dict], spark: list[dict]) -> None:
    key = lambda r: (r["user_id"], r["rank"], r["item_id"], r["reason"])  # noqa: E731
    assert [key(r) for r in spark] == [key(r) for r in local]
    np.testing.assert_allclose([r["score"] for r in spark], [r["score"] for r in local], rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def night(tmp_path_factory, pg_url, spark):
    """The tiny generated night up to the gate, with a trained mtrl model forced to serve (it reads
    behaviours, has explanation vectors and an item memory: the score stage's fullest path)."""
    root = tmp_path_factory.mktemp("lake")
    generate(root, GenerateConfig(**TINY))
    # Blocks of 16 users: about ten blocks over the job's partitions, several per partition.
    settings = load_settings(
        lake_root=root, database_url=fresh_database(pg_url), top_k=5, spark_master="local[2]",
        model_kind="mtrl", model_epochs=1, score_block_users=16,
    )  # fmt: skip
    run_pipeline(DS, settings, stages="validate,features,train,evaluate,gate", force_promote=True)
    return settings


def _score(settings, engine: str) -> dict:
    result = stages.score(DS, settings.model_copy(update={"score_engine": engine}))
    return result.model_dump() if hasattr(result, "model_dump") else dict(result)


def test_score_stage_lists_are_the_same_with_either_engine(night):
    local = _score(night, "local")
    local_rows = _rows(local["path"])  # the spark run rewrites the same file
    spark = _score(night, "spark")
    assert (local["engine"], spark["engine"]) == ("local", "spark")
    assert local["model_version"].startswith("mtrl-") and local["users"] > 50
    same = lambda r: {k: v for k, v in r.items() if k not in ("engine", "seconds")}  # noqa: E731
    assert same(spark) == same(local)
    assert_same_lists(local_rows, _rows(spark["path"]))
    assert any(r["reason"].startswith("because of ") for r in local_rows)


@pytest.mark.parametrize("kind, options", [
    ("cooc", {}),  # the model's own explain() per user
    ("cooc", {"exclude": "seen", "k": 11}),  # short lists
    ("popularity", {"diversity_lambda": 0.9}),  # the MMR re-rank
])  # fmt: skip
def test_spark_engine_on_every_scoring_path(lake, spark, kind, options):  # noqa: F811
    path = _fit(lake, kind)
    args = {"k": 4, "block_users": 2, "similar_k": None, **options}  # 5 warm users: 3 blocks
    local = score_all_users(lake, HAND_DS, path, **args)
    local_rows = _rows(local["path"])
    distributed = score_all_users(lake, HAND_DS, path, **args, engine=SparkEngine(spark, partitions=2))
    assert distributed["engine"] == "spark" and distributed["rows"] == local["rows"] > 0
    assert distributed["expected_rows"] == local["expected_rows"]
    assert_same_lists(local_rows, _rows(distributed["path"]))


def test_blocks_cut_across_batches_are_put_back_together():
    def batch(blocks, positions):
        return pa.RecordBatch.from_pydict({BLOCK: pa.array(blocks, pa.int64()), POS: pa.array(positions, pa.int64())})

    tables = list(_whole_blocks(iter([batch([0, 0], [0, 1]), batch([], []), batch([0, 1, 1], [2, 3, 4]),
                                      batch([2], [5])])))
    assert [t.column(POS).to_pylist() for t in tables] == [[0, 1, 2], [3, 4], [5]]


def test_engine_setting_follows_the_spark_master(monkeypatch):
    assert load_settings().score_engine == "local"
    assert load_settings(spark_master="local[4]").score_engine == "local"
    assert load_settings(spark_master="spark://spark-master:7077").score_engine == "spark"
    monkeypatch.setenv("RECSYS_SCORE_ENGINE", "local")
    assert load_settings(spark_master="yarn").score_engine == "local"  # said explicitly: kept


@pytest.mark.slow  # two fresh processes, one of them starting its own Spark
def test_bench_score_spark_compares_the_engines(tmp_path, capsys):
    import json

    from recsys.cli import main
    from recsys.models import build_model
    from tests.test_mtrl_model import funnel_data

    build_model("mtrl", max_len=6, d=16, max_epochs=1).fit(funnel_data()).save(tmp_path / "m")
    assert main(["bench", "score-spark", "--model", str(tmp_path / "m"), "--users", "300", "--k", "5",
                 "--block-users", "64"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (last["users"], last["k"]) == (300, 5) and last["max_score_difference"] <= 1e-6  # else it raises
    assert last["local_users_per_s"] > 0 and last["spark_users_per_s"] > 0 and last["spark_tree_rss_mib"] > 0
