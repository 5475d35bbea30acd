"""`recsys benchmark`: import -> features -> train -> evaluate on a small hand-made dataset.

Real Spark, the real importer and the real models; the neural ones train in small steps for at
most 20 epochs, enough to learn the planted ring.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsys.benchmark import run_benchmark, summary_line
from recsys.config import load_settings

N_ITEMS = 20
# 61 users make one step of the default batch: smaller steps, so 20 epochs are enough updates.
NEURAL = {"max_epochs": 20, "batch_size": 8, "warmup_steps": 5, "eval_users": 100}


def amazon_sequences(folder: Path) -> Path:
    """Users walk a ring of 20 items (next item = previous + 1); one user ends on an item
    nobody else has, so its test target has no training interaction (a cold item)."""
    folder.mkdir(parents=True)
    lines = [f"u{u} " + " ".join(f"i{(u + j) % N_ITEMS}" for j in range(8)) for u in range(60)]
    lines.append("cold i0 i1 i2 i3 lonely")
    (folder / "Mini_Toys.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def result(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    settings = load_settings(lake_root=root / "unused")
    models = ["popularity", "itemknn", "full", "no_text", "sasrec_ce", "no_memory"]
    return run_benchmark(
        "amazon-seq", amazon_sequences(root / "data"), "loo", models, settings,
        overrides=NEURAL, workdir=root / "work",
    )  # fmt: skip


def test_every_model_is_ranked_against_the_full_catalogue(result):
    assert list(result["models"]) == ["popularity", "itemknn", "full", "no_text", "sasrec_ce", "no_memory"]
    assert (result["users"], result["items"], result["interactions"]) == (61, 21, 60 * 8 + 5)
    for r in result["models"].values():
        assert r["users"] == 61 and r["nan_scores"] == 0


def test_the_network_learns_the_ring_on_its_own(result):
    # Next item = last item + 1 for 60 of 61 test users: the network alone (no item memory)
    # and single-task SASRec must find it, far above popularity's chance.
    for name in ("no_memory", "sasrec_ce"):
        r = result["models"][name]
        assert r["hr@10"] >= 0.9 and r["mrr@10"] >= 0.5, (name, r["hr@10"], r["mrr@10"])
        assert r["mrr@10"] > 2 * result["models"]["popularity"]["mrr@10"]


def test_item_knn_learns_the_ring_and_popularity_cannot(result):
    # Each test target follows its user's last training item on the ring: co-occurrence finds it.
    knn, pop = result["models"]["itemknn"], result["models"]["popularity"]
    assert knn["hr@10"] >= 0.9
    assert pop["hr@10"] < knn["hr@10"]


def test_an_ablation_the_data_cannot_express_is_not_trained_twice(result):
    # Amazon sequences carry no item text: `no_text` is the same network as `full` there.
    no_text, full = result["models"]["no_text"], result["models"]["full"]
    assert no_text["same_as"] == "full"
    assert no_text["ndcg@10"] == full["ndcg@10"]
    assert any("no item text" in n for n in full["notes"])
    # sasrec_ce drops the Q head and the side inputs, which the data can train: it runs.
    sasrec = result["models"]["sasrec_ce"]
    assert "same_as" not in sasrec
    assert 1 <= sasrec["epochs"] <= NEURAL["max_epochs"] and sasrec["sequences_per_second"] > 0


def test_no_memory_ranks_with_the_network_full_trained(result):
    full, alone = result["models"]["full"], result["models"]["no_memory"]
    assert alone["network_of"] == "full" and alone["train_seconds"] == full["train_seconds"]
    # full's network, ranking on its own: what full reports as such (or serves, when its blend
    # chose the network alone)
    assert alone["ndcg@10"] == full.get("network_ndcg@10", full["ndcg@10"])
    assert full.get("memory_weight", 0.0) == full["blend"]["memory"]  # the served weight, as reported
    assert "network_ndcg@10" not in result["models"]["sasrec_ce"]  # SASRec serves its network alone
    # the paired difference to full is the difference of the two means over the same users
    assert alone["vs_full"]["ndcg@10"]["diff"] == pytest.approx(alone["ndcg@10"] - full["ndcg@10"], abs=1e-5)
    assert "vs_full" not in full


def test_cold_items_are_counted_separately(result):
    for r in result["models"].values():
        assert r["cold_cases"] == 1
    # Nobody trained on "lonely": counting models cannot put it in a top 10.
    assert result["models"]["popularity"]["cold_recall@10"] == 0.0
    assert result["models"]["itemknn"]["cold_recall@10"] == 0.0


def test_the_last_line_is_one_json_object(result):
    line = json.loads(summary_line(result))
    assert line["dataset"] == "data" and line["protocol"] == "loo"
    assert set(line["models"]["itemknn"]) >= {"ndcg@10", "hr@10", "mrr@10", "recall@20", "train_seconds"}
    assert line["models"]["no_text"]["same_as"] == "full"


def test_hold_out_items_drops_only_training_rows_of_the_chosen_items():
    from recsys.benchmark import hold_out_items
    from recsys.data.interactions import Interactions

    # 10 items; user 0 trains on 0..7, validates on 8, tests on 9.
    n = 10
    split = np.array([0] * 8 + [1, 2], np.int8)
    data = Interactions(
        np.array(["u"]), np.zeros(n, np.int32), np.arange(n, dtype=np.int32), np.zeros(n, np.int8),
        np.arange(n, dtype=np.int64), np.full(n, np.nan, np.float32), split, n,
    )  # fmt: skip
    kept, cold = hold_out_items(data, 0.5, seed=3)
    dropped = sorted(set(range(n)) - set(kept.item.tolist()))
    assert len(cold) == 5 and dropped == sorted(set(cold.tolist()) & set(range(8)))
    assert 3 <= len(dropped) <= 5  # 5 of 10 items are chosen; at least 3 of them have training rows
    assert all(split[i] == 0 for i in dropped)  # validation and test rows always stay
    assert set(kept.item.tolist()) >= {8, 9}
    assert hold_out_items(data, 0.5, seed=3)[0].item.tolist() == kept.item.tolist()  # reproducible


@pytest.fixture(scope="module")
def synthetic(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-synthetic")
    settings = load_settings(lake_root=root / "unused")
    return run_benchmark(
        "synthetic", "users=300,items=150,days=12", "temporal", ["popularity", "full"], settings,
        overrides={"max_epochs": 2}, workdir=root / "work", save_dir=root / "models",
    ) | {"saved": root / "models"}  # fmt: skip


def test_a_log_with_behaviours_reports_click_and_purchase_metrics_and_the_served_blend(synthetic):
    full = synthetic["models"]["full"]
    assert synthetic["dataset"] == "users=300,items=150,days=12" and synthetic["protocol"] == "temporal"
    for m in ("click_ndcg@10", "click_hr@10", "purchase_ndcg@10", "purchase_hr@10"):
        assert m in full and m in synthetic["models"]["popularity"]
    assert full["purchase_users"] < full["users"]  # only targets that were bought count
    assert set(full["blend"]) == {"memory", "q", "buy", "pop"} and len(full["blend"]["pop"]) == 4
    line = json.loads(summary_line(synthetic))
    assert line["models"]["full"]["blend"] == full["blend"]
    # --save keeps each trained network with the blend it serves; baselines are not saved
    from recsys.models import load_model

    assert {k: v for k, v in load_model(synthetic["saved"] / "full").blend.to_dict().items() if k != "chosen_on"} == full["blend"]
    assert not (synthetic["saved"] / "popularity").exists()
    for variant in full.get("serving", {}).values():  # each against the served blend, same users
        assert variant["vs_served"]["ndcg@10"]["diff"] == pytest.approx(variant["ndcg@10"] - full["ndcg@10"], abs=1e-5)
