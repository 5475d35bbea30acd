"""Weighted draws of items within groups, for every simulated user at once."""

from __future__ import annotations

import numpy as np


class GroupSampler:
    """Draws items within groups (a topic, a topic's noun) in proportion to weights, vectorised.

    Items of zero weight (not yet created) are never drawn; a group with no weight gives -1.
    """

    def __init__(self, group: np.ndarray, weight: np.ndarray, n_groups: int):
        self._order = np.argsort(group, kind="stable")
        w = weight[self._order]
        self._cum = np.cumsum(w)
        # Float rounding can land a draw on a zero-weight neighbour: step back to a real one.
        idx = np.arange(len(w))
        self._last_positive = np.maximum.accumulate(np.where(w > 0, idx, -1))
        counts = np.bincount(group, minlength=n_groups)
        self._hi = np.cumsum(counts)
        self._lo = self._hi - counts
        cum0 = np.concatenate([[0.0], self._cum])
        self._base = cum0[self._lo]
        self._mass = cum0[self._hi] - self._base

    def draw(self, groups: np.ndarray, r: np.ndarray) -> np.ndarray:
        """One item per entry of `groups`, using uniforms `r` in [0, 1)."""
        target = self._base[groups] + r * self._mass[groups]
        pos = np.searchsorted(self._cum, target, side="right")
        pos = np.clip(pos, self._lo[groups], np.maximum(self._hi[groups] - 1, 0))
        pos = self._last_positive[np.minimum(pos, len(self._cum) - 1)]
        ok = (self._mass[groups] > 0) & (pos >= self._lo[groups])
        return np.where(ok, self._order[np.maximum(pos, 0)], -1)
