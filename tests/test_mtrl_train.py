"""Training of the multi-task RL model: determinism, early stopping, warm start, DDP (gloo, 2 processes)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from recsys.evaluate.protocol import EvalCases
from recsys.models import build_model
from recsys.models.mtrl.checkpoint import WEIGHTS_FILE, load_checkpoint
from recsys.models.mtrl.config import make_config
from recsys.models.mtrl.inference import evaluate
from recsys.models.mtrl.losses import sampled_ce
from recsys.models.mtrl.train import _budget_spent, _build, to_batch, train
from tests.test_mtrl_model import funnel_data, one_thread  # noqa: F401 (autouse fixture)

SMALL = dict(max_len=8, d=16, n_heads=2, batch_size=32, warmup_steps=5)


def chain_cases(n_items: int) -> EvalCases:
    """Histories walking i -> i+1; the next item is the target."""
    hist = [np.array([(s + k) % n_items for k in range(4)]) for s in range(n_items)]
    targets = [np.array([(s + 4) % n_items]) for s in range(n_items)]
    return EvalCases(np.arange(n_items), hist, targets, [np.unique(h) for h in hist])


def test_training_is_deterministic_on_cpu_for_a_seed():
    data = funnel_data(n_users=30)
    runs = [train(make_config("full", max_epochs=2, seed=s, **SMALL), data, progress=False) for s in (7, 7, 8)]
    a, b, c = (r.net.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    losses = [[h["loss_rank"] for h in r.meta["history"]] for r in runs]
    assert losses[0] == losses[1] != losses[2]


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    data = funnel_data(n_users=60)
    cases = chain_cases(data.n_items)
    cfg = make_config("full", max_epochs=40, patience=2, min_epochs=6, **{**SMALL, "d": 32})
    art = train(cfg, data, cases, out_dir=tmp_path, progress=False)
    hist = art.meta["history"]
    # Patience counts from the best epoch, but never ends a run before min_epochs.
    assert art.meta["epochs_run"] == max(6, art.meta["epoch"] + 2) < 40
    best = max(h["ndcg@10"] for h in hist)
    assert art.meta["best_ndcg10"] == best and hist[art.meta["epoch"] - 1]["ndcg@10"] == best
    assert all(h["ndcg@10"] <= best for h in hist[art.meta["epoch"] :])
    assert evaluate(art.net, cases, art.meta["default_type"])["ndcg@10"] == pytest.approx(best, abs=1e-5)  # best weights back
    net, meta = load_checkpoint(tmp_path / WEIGHTS_FILE)  # the best checkpoint on disk
    assert meta["epoch"] == art.meta["epoch"] and meta["fingerprint"] == art.meta["fingerprint"]
    assert all(torch.equal(v, art.net.state_dict()[k]) for k, v in net.state_dict().items())


def test_warm_start_keeps_known_items_and_starts_new_ones_from_text(tmp_path):
    old = funnel_data(n_items=10, seed=1)
    text = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    np.save(tmp_path / "old.npy", text[:10])
    np.save(tmp_path / "new.npy", text)
    champion = build_model("mtrl", text_path=str(tmp_path / "old.npy"), max_epochs=2, **SMALL).fit(old)
    champion.save(tmp_path / "champion")

    init = load_checkpoint(tmp_path / "champion" / WEIGHTS_FILE)
    net = _build(champion.net.cfg, 12, torch.from_numpy(text), init, notes := [])
    assert "warm start: 10 items from the champion, 2 new from text" in notes
    assert torch.equal(net.item_id.weight[:10], champion.net.item_id.weight)
    with torch.no_grad():
        torch.testing.assert_close(net.item_table()[10:], net.text_proj(torch.from_numpy(text[10:])))

    new = funnel_data(n_items=12, seed=2)
    model = build_model("mtrl", text_path=str(tmp_path / "new.npy"), init_from=str(tmp_path / "champion"), max_epochs=1, **SMALL)
    model.fit(new)
    assert model.net.n_items == 12 and any(n.startswith("warm start") for n in model.meta["notes"])
    assert model.score([np.array([10, 11])]).shape == (1, 12)


def test_train_function_on_the_cpu_reports_throughput():
    art = train(make_config("sasrec_ce", max_epochs=1, **SMALL), funnel_data(), progress=False)
    row = art.meta["history"][0]
    assert row["seq_per_s"] > 0 and row["seconds"] > 0 and art.meta["device"] == "cpu"


# ------------------------------------------------------------------ DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    data = funnel_data(n_users=64)
    art = train(make_config("full", max_epochs=3, device="cpu", **SMALL), data, progress=False)
    state = {k: v.double().sum().item() for k, v in art.net.state_dict().items()}
    Path(out, f"rank{rank}.json").write_text(json.dumps({"meta": art.meta, "state": state}))
    torch.distributed.destroy_process_group()


def test_ddp_gloo_two_processes_stay_in_sync(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["meta"]["world_size"] == r1["meta"]["world_size"] == 2
    # each rank saw half the windows per step, and DDP averaged the gradients: same weights
    assert r0["state"] == r1["state"]
    single = train(make_config("full", max_epochs=1, device="cpu", **SMALL), funnel_data(n_users=64), progress=False)
    assert r0["meta"]["history"][0]["step"] == single.meta["history"][0]["step"]  # global batch kept
    hist = r0["meta"]["history"]
    assert hist[-1]["loss_rank"] < hist[0]["loss_rank"]


def test_refit_learns_the_interactions_early_stopping_held_out():
    # Items 10 and 11 occur only in the "validation" interactions: after the refit epoch they
    # have an id vector of their own, and the model is otherwise the early-stopped one, moved on.
    full = funnel_data(n_users=40, n_items=12, seed=2)
    held_out = np.isin(full.item, [10, 11])
    train_only = full.select(~held_out)
    model = build_model("mtrl", preset="no_text", max_epochs=2, refit_epochs=1, **SMALL)
    model.fit(train_only, chain_cases(10), refit_data=full)
    assert model.net.has_id[:10].sum() == 10 and model.net.has_id[10:].tolist() == [1.0, 1.0]
    assert model.meta["refit"]["epochs"] == 1 and model.meta["refit"]["interactions"] == len(full.item)
    assert model.meta["epochs_run"] <= 2  # the early-stopped run's own record is kept

    without = build_model("mtrl", preset="no_text", max_epochs=2, **SMALL).fit(train_only, chain_cases(10))
    assert "refit" not in without.meta and without.net.has_id[10:].tolist() == [0.0, 0.0]


def test_a_time_budget_stops_training_at_the_step_that_leaves_the_refit_its_time():
    data = funnel_data(n_users=60)
    cfg = make_config(max_len=6, d=16, batch_size=8, max_epochs=30, patience=30, budget_seconds=1e-6)
    valid = EvalCases(np.arange(12), [np.array([(s + j) % 12 for j in range(3)]) for s in range(12)],
                      [np.array([(s + 3) % 12]) for s in range(12)], [np.arange(0)] * 12)  # fmt: skip
    art = train(cfg, data, valid, progress=False)
    # One step measures the pace; a budget already spent then ends the run inside its first
    # epoch, and that epoch is still evaluated and kept.
    stop = art.meta["budget_stop"]
    assert (stop["epoch"], stop["step"], stop["budget_seconds"]) == (1, 1, 1e-6) and 0 < stop["epoch_share"] < 1
    assert len(art.meta["history"]) == 1 and art.meta["step"] == 1 and "ndcg@10" in art.meta["history"][0]
    assert any("budget" in n for n in art.meta["notes"])
    unbounded = train(make_config(max_len=6, d=16, batch_size=8, max_epochs=3, patience=30), data, valid, progress=False)
    assert len(unbounded.meta["history"]) == 3 and "budget_stop" not in unbounded.meta
    assert unbounded.meta["history"][0]["step"] > 1


def test_an_epoch_whose_evaluation_would_outlast_the_budget_goes_unevaluated(monkeypatch):
    # each evaluation takes 2 s of a 3 s budget: epoch 1 is evaluated; epoch 2 then stops at
    # its first step, with too little left for an evaluation, and epoch 1's weights are kept
    def slow(*args, **kwargs):
        time.sleep(2.0)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr("recsys.models.mtrl.train.evaluate", slow)
    data = funnel_data(n_users=60)
    cfg = make_config(max_len=6, d=16, batch_size=8, max_epochs=30, patience=30, budget_seconds=3.0)
    valid = EvalCases(np.arange(12), [np.array([(s + j) % 12 for j in range(3)]) for s in range(12)],
                      [np.array([(s + 3) % 12]) for s in range(12)], [np.arange(0)] * 12)  # fmt: skip
    art = train(cfg, data, valid, progress=False)
    assert art.meta["budget_stop"]["epoch"] == 2 and art.meta["budget_stop"]["evaluated"] is False
    first, second = art.meta["history"]
    assert "ndcg@10" in first and "ndcg@10" not in second and art.meta["epoch"] == 1
    assert any("not evaluated" in n for n in art.meta["notes"])


def test_a_budget_stop_early_in_an_epoch_leaves_it_unevaluated_once_an_evaluation_exists():
    # A 100 s budget, 1 s a step, 100 steps an epoch, an evaluation 5 s, the refit capped at a
    # third of the budget: with 90 s gone training stops.
    cfg = make_config(budget_seconds=100.0, refit_epochs=1)
    now = time.perf_counter()

    def spent(elapsed: float, done: int, evaluated: bool) -> tuple[bool, bool]:
        return _budget_spent(cfg, now - elapsed, now - done, done, 100, 1.0, 5.0, evaluated, 1, torch.device("cpu"))[:2]

    assert spent(90.0, 1, evaluated=True) == (True, True)  # one step in: its evaluation goes to the refit
    assert spent(90.0, 50, evaluated=True) == (True, False)  # half an epoch is worth evaluating
    assert spent(90.0, 1, evaluated=False) == (True, False)  # the first evaluation is what the run keeps
    assert spent(97.0, 50, evaluated=True) == (True, True)  # no time left for it
    assert spent(10.0, 1, evaluated=True) == (False, False)


def test_with_a_budget_the_learning_rate_falls_linearly_to_nothing_where_the_loop_must_stop():
    # A 100 s budget, 40 s gone, an evaluation 5 s and the refit a third of the budget: the loop
    # must stop at 61.7 s, so 21.7 of its 61.7 s are left, and that share of the rate.
    now = time.perf_counter()

    def share(cfg, elapsed: float) -> float:
        return _budget_spent(cfg, now - elapsed, now - 1.0, 1, 100, 1.0, 5.0, True, 1, torch.device("cpu"))[2]

    decayed = make_config(budget_seconds=100.0, refit_epochs=1)
    assert share(decayed, 40.0) == pytest.approx(21.67 / 61.67, abs=0.01)
    assert share(decayed, 1.0) == pytest.approx(1.0, abs=0.02) and share(decayed, 70.0) == 0.0
    assert share(make_config(budget_seconds=100.0, budget_lr_decay=False), 40.0) == 1.0
    # Epochs of 10 s (the refit then 10 s too, so the loop must stop at 85 s): two of them end
    # long before, so the budget does not bind, the rate stays, and the run is deterministic;
    # forty would not.
    def bound(max_epochs: int) -> float:
        return _budget_spent(decayed, now - 40.0, now - 1.0, 1, 10, 1.0, 5.0, True, 1, torch.device("cpu"), None, max_epochs)[2]

    assert bound(2) == 1.0 and bound(40) < 1.0


def test_the_budget_says_how_many_epochs_its_loop_holds_at_this_pace():
    # A 100 s budget, an evaluation 5 s, epochs of 10 s (so the refit 10 s): the loop may run
    # from its start to 85 s, 8.5 epochs; begun 5 s late, 8.
    cfg = make_config(budget_seconds=100.0, refit_epochs=1)
    now = time.perf_counter()
    holds = _budget_spent(cfg, now - 40.0, now - 1.0, 1, 10, 1.0, 5.0, True, 1, torch.device("cpu"))[3]
    later = _budget_spent(cfg, now - 40.0, now - 1.0, 1, 10, 1.0, 5.0, True, 1, torch.device("cpu"), now - 35.0)[3]
    assert holds == pytest.approx(8.5, abs=0.01) and later == pytest.approx(8.0, abs=0.01)


def test_a_budget_too_short_for_the_full_softmax_trains_on_the_sampled_one(monkeypatch):
    # 50 ms a step and 8 steps an epoch: a 3 s budget holds about 6 full-softmax epochs, fewer
    # than min_epochs (10), so after the probe's steps the loss is the sampled softmax,
    # and the refit that starts from these weights keeps it. A roomy budget, and no budget,
    # keep the full softmax throughout.
    def slow(*args, **kwargs):
        time.sleep(0.05)
        return to_batch(*args, **kwargs)

    sampled_steps = {"n": 0}

    def counted(*args, **kwargs):
        sampled_steps["n"] += 1
        return sampled_ce(*args, **kwargs)

    monkeypatch.setattr("recsys.models.mtrl.train.to_batch", slow)
    monkeypatch.setattr("recsys.models.mtrl.losses.sampled_ce", counted)
    monkeypatch.setattr("recsys.models.mtrl.train.SOFTMAX_PROBE_STEPS", 5)
    data = funnel_data(n_users=60, n_items=24)
    small = dict(max_len=6, d=16, batch_size=8, n_sampled=8, max_epochs=30, patience=30, min_epochs=10, refit_epochs=1)
    art = train(make_config(budget_seconds=3.0, **small), data, chain_cases(24), progress=False)
    switched = art.meta["sampled_softmax"]
    assert switched["from_step"] == 5 and switched["negatives"] == 8 and switched["full_epochs_the_budget_holds"] < 10
    assert sampled_steps["n"] == art.meta["budget_stop"]["step"] - 5  # every step after the probe
    assert art.cfg.full_softmax_max_items == 0 and any(n.startswith("sampled softmax (8 negatives)") for n in art.meta["notes"])
    sampled_steps["n"] = 0
    refit = train(art.cfg, data, None, init=(art.net, art.meta), progress=False, fine_tune=False)
    assert sampled_steps["n"] == refit.meta["step"] > 0 and "sampled_softmax" not in refit.meta
    for roomy in (make_config(budget_seconds=1000.0, **{**small, "max_epochs": 2}), make_config(**{**small, "max_epochs": 2})):
        sampled_steps["n"] = 0
        art = train(roomy, data, chain_cases(24), progress=False)
        assert sampled_steps["n"] == 0 and "sampled_softmax" not in art.meta and art.cfg.full_softmax_max_items == 50_000


def test_an_evaluation_too_costly_for_the_budget_is_timed_first_and_cut_to_fit(monkeypatch):
    # 5 ms a validation user, 2,000 users: one evaluation would take 10 s, a whole 10 s budget.
    # Two probes before the first step measure that, and validation keeps the users that fit in
    # a tenth of the budget (about 200, at least the larger probe's 256) instead of spending it.
    per_user = {"s": 0.005}

    def slow(net, cases, *args, **kwargs):
        time.sleep(per_user["s"] * len(cases.histories))
        return evaluate(net, cases, *args, **kwargs)

    monkeypatch.setattr("recsys.models.mtrl.train.evaluate", slow)
    data = funnel_data(n_users=60)
    rng = np.random.default_rng(0)
    hist = [rng.choice(12, 3, replace=False) for _ in range(2000)]
    valid = EvalCases(np.arange(2000), hist, [rng.choice(12, 1) for _ in hist], hist)
    cfg = make_config(max_len=6, d=16, batch_size=8, max_epochs=1, budget_seconds=10.0)
    art = train(cfg, data, valid, progress=False)
    assert art.meta["eval_users"] == 256 and "ndcg@10" in art.meta["history"][0]
    assert any(n.startswith("validation on 256 of 2000 users") for n in art.meta["notes"])
    # Roomy enough for all of them (1 s an evaluation here): nothing is cut, and no budget
    # means no probe at all.
    per_user["s"] = 0.0005
    for roomy in (make_config(max_len=6, d=16, batch_size=8, max_epochs=1, budget_seconds=1000.0),
                  make_config(max_len=6, d=16, batch_size=8, max_epochs=1)):  # fmt: skip
        art = train(roomy, data, valid, progress=False)
        assert art.meta["eval_users"] == 2000 and not any(n.startswith("validation on") for n in art.meta["notes"])


def test_the_refit_gets_what_the_budget_left_and_none_when_it_is_spent():
    full = funnel_data(n_users=40, n_items=12, seed=2)
    train_only = full.select(~np.isin(full.item, [10, 11]))
    spent = build_model("mtrl", preset="no_text", max_epochs=2, budget_seconds=1e-6, **SMALL)
    spent.fit(train_only, chain_cases(10), refit_data=full)
    assert "refit" not in spent.meta and any(n.startswith("no refit") for n in spent.meta["notes"])
    roomy = build_model("mtrl", preset="no_text", max_epochs=2, budget_seconds=3600, **SMALL)
    roomy.fit(train_only, chain_cases(10), refit_data=full)
    assert roomy.meta["refit"]["epochs"] == 1 and "budget_stop" not in roomy.meta["refit"]
