"""Evaluation protocols: which history each user is ranked from, and which items count as hits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data.interactions import Interactions


@dataclass(frozen=True)
class EvalCases:
    users: np.ndarray  # (U,) user codes into Interactions.user_ids
    histories: list[np.ndarray]  # item_idx sequences the model sees
    targets: list[np.ndarray]  # held-out items that count as hits
    exclude: list[np.ndarray]  # items removed from the ranking (already seen)


def temporal_cases(data: Interactions, holdout: str = "test") -> EvalCases:
    """Nightly protocol: rank from everything before the holdout window; hits are the new items
    each user interacted with inside it. Users with no history before the window are left out
    (they get the cold-start fallback, measured separately)."""
    before = data.in_splits(*[s for s in ("train", "valid", "test") if s != holdout and _precedes(s, holdout)])
    after = data.in_splits(holdout)
    hist = before.histories()
    future = after.histories()
    users, histories, targets = [], [], []
    for u in sorted(set(hist) & set(future)):
        seen = hist[u]
        new = np.setdiff1d(np.unique(future[u]), seen)
        if len(new):
            users.append(u)
            histories.append(seen)
            targets.append(new)
    return EvalCases(np.array(users, dtype=np.int64), histories, targets, [np.unique(h) for h in histories])


def _precedes(a: str, b: str) -> bool:
    order = ("train", "valid", "test")
    return order.index(a) < order.index(b)


def validation_cases(data: Interactions) -> EvalCases:
    """Early-stopping protocol: rank from `train`, hits are the `valid` items (test never seen)."""
    return temporal_cases(data.in_splits("train", "valid"), holdout="valid")
