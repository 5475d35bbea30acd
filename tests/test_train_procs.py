"""RECSYS_TRAIN_PROCS: the train stage runs torchrun (DDP, gloo on the CPU) itself, and the night
goes on exactly as after a single-process fit: train.json, model folder, registry, evaluate, score."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from recsys.config import load_settings
from recsys.data.generate import GenerateConfig, generate
from recsys.models import load_model
from recsys.models.mtrl.launch import torchrun_command, train_processes
from recsys.pipeline import stages
from recsys.pipeline.run import run_pipeline
from tests.helpers import TINY, fresh_database

pytestmark = pytest.mark.slow
DS = TINY["end_date"]


def test_processes_setting_and_command_line(tmp_path):
    assert train_processes(3) == 3
    cmd = torchrun_command(2, tmp_path / "f", tmp_path / "m", {"preset": "full", "text_path": None, "init_from": "/c",
                                                               "seed": 0, "max_epochs": 2}, n_items=7, refit=True)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert cmd[cmd.index("--init") + 1] == "/c" and "--text" not in cmd and "--refit" in cmd
    assert cmd[cmd.index("--n-items") + 1] == "7" and cmd[cmd.index("--set") + 1:] == ["seed=0", "max_epochs=2"]


@pytest.fixture(scope="module")
def night(tmp_path_factory, pg_url, spark):
    lake = tmp_path_factory.mktemp("lake")
    generate(lake, GenerateConfig(**TINY))
    settings = load_settings(
        lake_root=lake, database_url=fresh_database(pg_url), top_k=5, spark_master="local[2]",
        model_kind="mtrl", model_epochs=2, train_procs=2,
    )  # fmt: skip
    run_pipeline(DS, settings, stages="validate,features,encode")
    return settings


def test_two_processes_train_the_model_the_night_then_uses(night):
    settings = night
    trained = stages.train(DS, settings)
    assert trained.processes == 2
    model = load_model(Path(trained.path))
    assert model.meta["world_size"] == 2 and model.meta["refit"]["epochs"] == 1  # DDP, then the refit
    assert model.net.n_items == trained.items
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT kind, artifact_path FROM recsys.models WHERE model_version = %s",
                           (trained.model_version,)).fetchone()
    assert row == ("mtrl", trained.path)

    evaluated = stages.evaluate(DS, settings)
    assert evaluated.model_version == trained.model_version
    assert evaluated.metrics["challenger"]["ndcg@10"] > 0
    stages.gate(DS, settings, force_promote=True, forced_by="test")
    scored = stages.score(DS, settings)
    assert scored.model_version == trained.model_version and scored.users > 50
