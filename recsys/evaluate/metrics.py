"""Ranking metrics over a (users x K) hit matrix from full-catalogue ranking.

`hits[u, r]` is 1 when the item at rank r+1 of user u's list is one of u's held-out
targets; `n_targets[u]` is how many targets u has. Every metric returns the mean over users.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {}


def register(name: str):
    def wrap(fn):
        METRICS[name] = fn
        return fn

    return wrap


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else float("nan")


@register("hr")
def hit_rate(hits: np.ndarray, n_targets: np.ndarray) -> float:
    """HR@K = mean_u 1[any target in top K]. Range [0, 1]."""
    return _mean(hits.any(axis=1).astype(np.float64))


@register("ndcg")
def ndcg(hits: np.ndarray, n_targets: np.ndarray) -> float:
    """NDCG@K = mean_u DCG_u / IDCG_u, DCG = sum_r hit_r / log2(r + 1), IDCG over min(|T_u|, K) hits.

    Range [0, 1]; 1 when every target sits at the top.
    """
    k = hits.shape[1]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ discount
    ideal = np.cumsum(discount)[np.clip(n_targets, 1, k) - 1]
    return _mean(dcg / ideal)


@register("mrr")
def mrr(hits: np.ndarray, n_targets: np.ndarray) -> float:
    """MRR@K = mean_u 1 / rank of the first hit (0 when none in top K). Range [0, 1]."""
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    return _mean(1.0 / first)


@register("recall")
def recall(hits: np.ndarray, n_targets: np.ndarray) -> float:
    """Recall@K = mean_u hits_u / |T_u|. Range [0, 1]."""
    return _mean(hits.sum(axis=1) / np.maximum(n_targets, 1))


@register("precision")
def precision(hits: np.ndarray, n_targets: np.ndarray) -> float:
    """Precision@K = mean_u hits_u / K. Range [0, 1]."""
    return _mean(hits.sum(axis=1) / hits.shape[1])


def catalogue_coverage(top_items: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one list. Range [0, 1]."""
    return len(np.unique(top_items)) / max(n_items, 1)


def hit_matrix(top_items: np.ndarray, targets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(U, K) ranked item ids + per-user target sets -> (hits (U, K) float, n_targets (U,) int)."""
    hits = np.zeros(top_items.shape, dtype=np.float64)
    for u, t in enumerate(targets):
        hits[u] = np.isin(top_items[u], t)
    return hits, np.array([len(t) for t in targets], dtype=np.int64)


def ranking_report(top_items: np.ndarray, targets: list[np.ndarray], ks=(10, 20)) -> dict[str, float]:
    """Every registered metric at every K, named like `ndcg@10`."""
    out = {}
    for k in ks:
        hits, n = hit_matrix(top_items[:, :k], targets)
        for name, fn in METRICS.items():
            out[f"{name}@{k}"] = fn(hits, n)
    return out
