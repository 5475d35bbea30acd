"""The train stage's budget (recsys/pipeline/budget.py): a fixed number of minutes, or what the
night's window leaves after tonight's stages before training and an earlier night's after it."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from recsys.config import load_settings
from recsys.lake import AFTER_TRAIN, BEFORE_TRAIN, Lake
from recsys.pipeline.budget import AFTER_TRAIN_SHARE, MIN_TRAIN_SHARE, train_budget
from tests.test_stage_results import DS, RESULTS, _write

# validate 18.15 s, features 16.01 s and encode 5.5 s in the stage-results test's files
BEFORE = 18.15 + 16.01 + 5.5
# evaluate 0.11 s, gate none, score 0.04 s and publish 0.05 s
AFTER = 0.11 + 0.04 + 0.05


@pytest.fixture
def lake(tmp_path) -> Lake:
    lake = Lake(tmp_path)
    for stage in BEFORE_TRAIN:
        _write(lake, stage, RESULTS[stage])
    return lake


def _budget(lake: Lake, **settings):
    return train_budget(load_settings(lake_root=lake.root, **settings), lake, DS)


def test_a_fixed_budget_wins_and_zero_means_no_limit(lake):
    assert _budget(lake, train_budget_minutes=30).seconds == 1800
    assert _budget(lake, train_budget_minutes=0).seconds is None
    assert _budget(lake, night_window_minutes=0).seconds is None


def test_a_first_night_keeps_a_share_of_the_window_for_the_stages_after_training(lake):
    budget = _budget(lake, night_window_minutes=60)
    assert budget.seconds == round(3600 - BEFORE - AFTER_TRAIN_SHARE * 3600, 1)
    assert "0.7 min before training" in budget.basis and "no earlier night" in budget.basis


def test_the_latest_night_whose_stages_after_training_all_ran_sizes_them(lake, caplog):
    two_days_ago, yesterday = DS - dt.timedelta(days=2), DS - dt.timedelta(days=1)
    for stage in AFTER_TRAIN:
        _write(lake, stage, RESULTS[stage], two_days_ago)
    # yesterday evaluated but did not publish
    _write(lake, "evaluate", RESULTS["evaluate"], yesterday)
    assert _budget(lake, night_window_minutes=10).seconds == round(600 - BEFORE - AFTER, 1)
    assert str(two_days_ago) in _budget(lake, night_window_minutes=10).basis

    # yesterday ran them all, but its evaluate file is broken
    _write(lake, "evaluate", {**RESULTS["evaluate"], "seconds": "soon"}, yesterday)
    for stage in AFTER_TRAIN[1:]:
        _write(lake, stage, RESULTS[stage], yesterday)
    with caplog.at_level(logging.WARNING, logger="recsys.pipeline.budget"):
        # the broken night is skipped with a warning that names its file, not the night's training
        assert _budget(lake, night_window_minutes=10).seconds == round(600 - BEFORE - AFTER, 1)
    assert "evaluate.json" in caplog.text


def test_a_spent_window_still_trains_its_minimum_share(lake, caplog):
    with caplog.at_level(logging.WARNING, logger="recsys.pipeline.budget"):
        budget = _budget(lake, night_window_minutes=0.5)
    assert budget.seconds == round(MIN_TRAIN_SHARE * 30, 1)
    assert "past its window" in caplog.text and "at least 10%" in budget.basis
