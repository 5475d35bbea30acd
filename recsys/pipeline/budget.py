"""How long tonight's training may take: a fixed budget, or what the night's window leaves.

A night has a window (`night_window_minutes`) from validate to publish. The stages before
training have run when the train stage starts, so their seconds are known; the stages after it
took about as long last night as they will tonight, since the users and the catalogue change
little from one night to the next. Training gets the rest. On a machine or a log where the
other stages are slow, training gets less, so the night still ends inside its window.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from recsys.config import Settings
from recsys.errors import InputError
from recsys.lake import AFTER_TRAIN, BEFORE_TRAIN, BUDGET_LOOKBACK_NIGHTS, Lake
from recsys.pipeline.results import STAGE_RESULTS

log = logging.getLogger(__name__)

# With no earlier night to go by, the stages after training get this share of the window (a
# 10M-event night's evaluate, gate, score and publish took 6.7% of an hour on 2 CPU cores).
AFTER_TRAIN_SHARE = 0.1
# However much of the window the other stages take, training gets at least this share of it: a
# few minutes' model beats none, and the gate still judges it.
MIN_TRAIN_SHARE = 0.1


@dataclass(frozen=True)
class TrainBudget:
    seconds: float | None  # None: no limit
    basis: str  # how the figure was found, for train.json and the logs


def train_budget(settings: Settings, lake: Lake, day: dt.date) -> TrainBudget:
    """The train stage's budget for the night of `day` (docstring of this module)."""
    fixed = settings.train_budget_minutes
    if fixed is not None:
        if not fixed:
            return TrainBudget(None, "no limit: train_budget_minutes is 0")
        return TrainBudget(fixed * 60, f"train_budget_minutes {fixed:g}")
    window = settings.night_window_minutes * 60
    if not window:
        return TrainBudget(None, "no limit: night_window_minutes is 0 and no train_budget_minutes")
    before = sum(_seconds(lake, day, stage) for stage in BEFORE_TRAIN)
    after, night = _after_train_seconds(lake, day)
    if night is not None:
        after_text = f"{after / 60:.1f} min after it on {night}"
    else:
        after = AFTER_TRAIN_SHARE * window
        after_text = f"{after / 60:.1f} min kept for the stages after it (no earlier night to go by)"
    left = window - before - after
    floor = MIN_TRAIN_SHARE * window
    basis = f"night window {window / 60:g} min: {before / 60:.1f} min before training tonight, {after_text}"
    if left < floor:
        log.warning("%s leave training %.0f s; it gets %.0f s, so the night will run past its window", basis, left, floor)
        return TrainBudget(round(floor, 1), f"{basis}; at least {MIN_TRAIN_SHARE:.0%} of the window")
    return TrainBudget(round(left, 1), basis)


def _seconds(lake: Lake, day: dt.date, stage: str) -> float:
    """What `stage` took on the night of `day`, 0 when it did not say (a Spark job submitted to a
    cluster leaves no seconds) or has not run."""
    result = STAGE_RESULTS[stage].find(lake, day)
    return float(getattr(result, "seconds", None) or 0.0)


def _after_train_seconds(lake: Lake, day: dt.date) -> tuple[float, dt.date | None]:
    """Seconds of the stages after training on the latest of the nights before `day` on which
    all of them ran, and that night; (0, None) when there is none."""
    for back in range(1, BUDGET_LOOKBACK_NIGHTS + 1):
        night = day - dt.timedelta(days=back)
        try:
            if all(STAGE_RESULTS[stage].find(lake, night) for stage in AFTER_TRAIN):
                return sum(_seconds(lake, night, stage) for stage in AFTER_TRAIN), night
        except InputError as err:
            # A broken record of an old night must not stop tonight: that night is skipped.
            log.warning("training budget: %s", err)
    return 0.0, None
