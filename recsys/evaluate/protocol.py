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
    # Strongest behaviour per target (index into schema.EVENT_TYPES), for reward-aware metrics.
    target_events: list[np.ndarray] | None = None
    # Behaviour of each history step, aligned with `histories`: what serving knows too.
    history_events: list[np.ndarray] | None = None

    def subset(self, keep: np.ndarray) -> "EvalCases":
        """The cases of users where `keep` (a boolean mask over users) is True."""
        idx = np.flatnonzero(keep)
        pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
        return EvalCases(
            self.users[idx], pick(self.histories), pick(self.targets), pick(self.exclude), pick(self.target_events),
            pick(self.history_events),
        )

    def with_targets(self, kind_min: int) -> "EvalCases":
        """Only targets whose strongest behaviour is at least `kind_min` (e.g. purchase); users
        left with none drop out."""
        targets, events, keep = [], [], []
        for t, e in zip(self.targets, self.target_events or [np.zeros(len(t), np.int8) for t in self.targets]):
            m = e >= kind_min
            targets.append(t[m])
            events.append(e[m])
            keep.append(bool(m.any()))
        cases = EvalCases(self.users, self.histories, targets, self.exclude, events, self.history_events)
        return cases.subset(np.array(keep, dtype=bool))


def temporal_cases(data: Interactions, holdout: str = "test") -> EvalCases:
    """Nightly protocol: rank from everything before the holdout window; hits are the new items
    each user interacted with inside it. Users with no history before the window are left out
    (they get the cold-start fallback, measured separately)."""
    before = data.in_splits(*[s for s in ("train", "valid", "test") if s != holdout and _precedes(s, holdout)])
    after = data.in_splits(holdout)
    hist, hist_events = before.histories(), before.event_histories()
    future = _strongest_per_item(after)
    users, histories, targets, events, behaviours = [], [], [], [], []
    for u in sorted(set(hist) & set(future)):
        seen = hist[u]
        items, strength = future[u]
        new = ~np.isin(items, seen)
        if new.any():
            users.append(u)
            histories.append(seen)
            behaviours.append(hist_events[u])
            targets.append(items[new])
            events.append(strength[new])
    return EvalCases(
        np.array(users, dtype=np.int64), histories, targets, [np.unique(h) for h in histories], events, behaviours
    )


def _strongest_per_item(data: Interactions) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """user -> (distinct items, strongest behaviour code on each)."""
    # Rating events rank above purchase in EVENT_TYPES but say nothing stronger; count them as purchase.
    strength = np.minimum(data.event, 3).astype(np.int8)
    order = np.lexsort((-strength, data.item, data.user))
    u, i, e = data.user[order], data.item[order], strength[order]
    first = np.ones(len(u), dtype=bool)
    first[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    u, i, e = u[first], i[first], e[first]
    cuts = np.flatnonzero(np.diff(u)) + 1
    return {int(us[0]): (it, ev) for us, it, ev in zip(np.split(u, cuts), np.split(i, cuts), np.split(e, cuts)) if len(us)}


def _precedes(a: str, b: str) -> bool:
    order = ("train", "valid", "test")
    return order.index(a) < order.index(b)


def validation_cases(data: Interactions) -> EvalCases:
    """Early-stopping protocol: rank from `train`, hits are the `valid` items (test never seen)."""
    return temporal_cases(data.in_splits("train", "valid"), holdout="valid")
