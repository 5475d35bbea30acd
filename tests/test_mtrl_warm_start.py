"""Warm start fine-tunes a champion on the windows newer than its data, plus a replayed share."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.config import load_settings
from recsys.data.interactions import Interactions
from recsys.models import build_model
from recsys.models.mtrl.checkpoint import WEIGHTS_FILE, load_checkpoint, save_checkpoint
from recsys.models.mtrl.config import with_changes
from recsys.models.mtrl.train import train, training_windows
from tests.test_mtrl_model import one_thread  # noqa: F401 (autouse fixture)

DAY = 86_400_000_000
# One view a day; max_len 8, stride 4: a user with n steps has windows predicting up to steps
# n-1, n-5, ... (while > 0), so 6 steps -> 2 windows, 8 steps -> 2 windows. Batches of 8.
SMALL = dict(max_len=8, window_stride=4, d=16, n_heads=2, batch_size=8, warmup_steps=5, max_epochs=5)


def views(days_per_user: list[int], n_items: int = 12) -> Interactions:
    """User u views items u, u+1, ... (mod n_items), one on each of days 0 .. days_per_user[u]-1."""
    user = np.repeat(np.arange(len(days_per_user)), days_per_user)
    day = np.concatenate([np.arange(n) for n in days_per_user])
    n = len(user)
    return Interactions(
        np.array([f"u{u}" for u in range(len(days_per_user))]), user.astype(np.int32),
        ((user + day) % n_items).astype(np.int32), np.zeros(n, np.int8), (day * DAY + user).astype(np.int64),
        np.full(n, np.nan, np.float32), np.zeros(n, np.int8), n_items,
    )


# Last night: 40 users with 6 days each (80 windows). Tonight: users 0-9 came back on days 6
# and 7: each has one window predicting those days (new) and one predicting days 1-3 (old).
OLD = views([6] * 40)
NEW = views([8] * 10 + [6] * 30)
N_NEW, N_OLD = 10, 70
N_REPLAY = round(0.2 * N_OLD)  # 14


@pytest.fixture
def champion(tmp_path):
    model = build_model("mtrl", preset="no_text", **{**SMALL, "max_epochs": 2}).fit(OLD)
    model.save(tmp_path / "champion")
    return tmp_path / "champion"


def test_warm_start_trains_on_new_windows_and_a_replay_share(champion):
    _, meta = load_checkpoint(champion / WEIGHTS_FILE)
    assert meta["data_end_us"] == 5 * DAY + 39  # the champion's newest step

    warm = build_model("mtrl", preset="no_text", init_from=str(champion), warm_epochs=2, **SMALL).fit(NEW)
    assert warm.meta["n_windows"] == N_NEW + N_OLD
    assert warm.meta["warm_start"] == {"new_windows": N_NEW, "replay_windows": N_REPLAY, "epochs": 2}
    # 24 windows in batches of 8: 3 steps an epoch, where all 80 windows take 10
    assert [h["step"] for h in warm.meta["history"]] == [3, 6]
    assert f"warm start fine-tunes on {N_NEW} new and {N_REPLAY} replayed of 80 windows" in warm.meta["notes"]
    assert warm.meta["data_end_us"] == 7 * DAY + 9  # user 9's day 7: what the next warm start builds on

    scratch = build_model("mtrl", preset="no_text", **SMALL).fit(NEW)
    assert "warm_start" not in scratch.meta and [h["step"] for h in scratch.meta["history"]] == [10, 20, 30, 40, 50]


def test_the_refit_trains_every_window(champion):
    net, meta = load_checkpoint(champion / WEIGHTS_FILE)
    refit = train(net.cfg, NEW, init=(net, meta), progress=False, fine_tune=False)
    assert "warm_start" not in refit.meta and refit.meta["history"][0]["step"] == 10


def test_a_refit_the_budget_cannot_hold_trains_every_new_window_then_older_ones_to_fill_it(champion):
    net, meta = load_checkpoint(champion / WEIGHTS_FILE)
    _, win = training_windows(net.cfg, NEW)
    new = win.last_ts > meta["data_end_us"]
    assert new.sum() == N_NEW
    # a pace at which the budget holds the new windows' positions and 20 older windows' worth
    mean_old = win.length[~new].mean()
    holds = int(win.length[new].sum()) + math.ceil(20 * mean_old)
    budget = 1e6  # so that the milliseconds spent before the loop do not change the count
    early = {**meta, "position_seconds": budget / (holds + 0.5)}
    refit = train(with_changes(net.cfg, budget_seconds=budget), NEW, init=(net, early), progress=False, fine_tune=False)
    assert f"refit on {N_NEW} new and 20 older of 80 windows" in " ".join(refit.meta["notes"])
    assert refit.meta["history"][0]["step"] == 4  # 30 windows in batches of 8

    roomy = {**meta, "position_seconds": budget / (win.length.sum() + 1)}  # every window fits: the full epoch
    full = train(with_changes(net.cfg, budget_seconds=budget), NEW, init=(net, roomy), progress=False, fine_tune=False)
    assert not any(n.startswith("refit on") for n in full.meta["notes"]) and full.meta["history"][0]["step"] == 10


def test_incompatible_champion_falls_back_to_a_full_run(champion):
    wider = build_model("mtrl", preset="no_text", init_from=str(champion), **{**SMALL, "d": 32}).fit(NEW)
    assert any(n.startswith("warm start skipped, champion incompatible") for n in wider.meta["notes"])
    assert "warm_start" not in wider.meta and wider.meta["epochs_run"] == 5 and wider.meta["step"] == 50


def test_nothing_newer_than_the_champion_trains_in_full(champion):
    again = build_model("mtrl", preset="no_text", init_from=str(champion), **SMALL).fit(OLD)
    assert "warm start trains on all windows: none predicts a step newer than the champion's data" in again.meta["notes"]
    assert "warm_start" not in again.meta and again.meta["step"] == 50


def test_champion_without_data_end_trains_in_full(champion):
    net, meta = load_checkpoint(champion / WEIGHTS_FILE)
    del meta["data_end_us"]  # as checkpoints were written before warm starts fine-tuned
    save_checkpoint(champion / WEIGHTS_FILE, net, meta)
    older = build_model("mtrl", preset="no_text", init_from=str(champion), **SMALL).fit(NEW)
    assert "warm start trains on all windows: the champion does not record data_end_us" in older.meta["notes"]
    assert "warm_start" not in older.meta and older.meta["step"] == 50


def test_warm_start_setting_reads_the_environment(monkeypatch):
    assert load_settings().warm_start is True
    monkeypatch.setenv("RECSYS_WARM_START", "false")
    assert load_settings().warm_start is False
