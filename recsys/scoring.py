"""Top-K over the full catalogue in blocks of users: the one ranking routine for evaluation and serving."""

from __future__ import annotations

import numpy as np

from recsys.models.base import Recommender


def top_k(
    model: Recommender,
    histories: list[np.ndarray],
    k: int,
    exclude: list[np.ndarray] | None = None,
    blocked: np.ndarray | None = None,
    block_users: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank every item for each history; return (items (U, K) int64, scores (U, K) float32).

    `exclude[u]` are item ids never recommended to user u (already seen or bought);
    `blocked` is a boolean (n_items,) mask of items never recommended to anyone (unavailable).
    Memory is bounded by block_users x n_items scores at a time.
    """
    n = len(histories)
    items = np.zeros((n, k), dtype=np.int64)
    scores = np.zeros((n, k), dtype=np.float32)
    for lo in range(0, n, block_users):
        hi = min(lo + block_users, n)
        s = model.score(histories[lo:hi]).astype(np.float32, copy=False)  # (B, I)
        s[~np.isfinite(s)] = -np.inf
        if blocked is not None:
            s[:, blocked[: s.shape[1]]] = -np.inf
        if exclude is not None:
            for r, ex in enumerate(exclude[lo:hi]):
                s[r, ex[ex < s.shape[1]]] = -np.inf
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]  # (B, K) unordered
        part_scores = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        items[lo:hi, :kk] = np.take_along_axis(part, order, axis=1)
        scores[lo:hi, :kk] = np.take_along_axis(part_scores, order, axis=1)
    return items, scores
