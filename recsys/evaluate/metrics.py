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
    return _mean(ndcg_per_user(hits, n_targets))


def ndcg_per_user(hits: np.ndarray, n_targets: np.ndarray) -> np.ndarray:
    """(U,) each user's DCG / IDCG: what `ndcg` averages, kept per user for paired comparisons."""
    k = hits.shape[1]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ discount
    ideal = np.cumsum(discount)[np.clip(n_targets, 1, k) - 1]
    return dcg / ideal


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of a - b over the same users, and its standard error (std of the differences /
    sqrt(n)): two models ranked for the same users differ by far less noise than each figure's
    own standard error suggests, so this is what "ahead by more than one standard error" reads."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if len(d) < 2:
        return float(d.mean()) if len(d) else float("nan"), float("nan")
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def standard_error(x: np.ndarray) -> float:
    """Standard error of a per-user metric's mean."""
    x = np.asarray(x, np.float64)
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


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


# --- beyond accuracy ---------------------------------------------------------------------------
def intra_list_diversity(top_items: np.ndarray, item_vectors: np.ndarray) -> float:
    """ILD = mean_u mean_{i<j in list} (1 - cos(v_i, v_j)). Range [0, 2]; 0 when every list is one item repeated.

    Pass one-hot categories as `item_vectors` for diversity by category (then 1 - cos is 0 or 1).
    """
    v = item_vectors[top_items]  # (U, K, D)
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    sim = np.einsum("ukd,ujd->ukj", v, v)  # (U, K, K)
    k = top_items.shape[1]
    if k < 2:
        return 0.0
    off = ~np.eye(k, dtype=bool)
    return _mean((1.0 - sim[:, off]).mean(axis=1))


def novelty(top_items: np.ndarray, item_popularity: np.ndarray) -> float:
    """Mean self-information -log2 p(i) of recommended items, p(i) = share of users who interacted with i.

    Range [0, log2(n_users)]; higher = less obvious items.
    """
    p = item_popularity / max(item_popularity.max(initial=0), 1)
    info = -np.log2(np.clip(p, 1e-12, 1.0))
    return _mean(info[top_items].mean(axis=1))


def popularity_bias(top_items: np.ndarray, item_popularity: np.ndarray) -> float:
    """Average recommendation popularity (ARP): mean_u mean_{i in list} pop(i) / max pop. Range [0, 1]."""
    return _mean((item_popularity[top_items] / max(item_popularity.max(initial=0), 1)).mean(axis=1))


# --- rating and behaviour prediction -----------------------------------------------------------
def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    """sqrt(mean (pred - true)^2). Range [0, inf)."""
    return float(np.sqrt(np.mean((pred - true) ** 2))) if len(true) else float("nan")


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    """mean |pred - true|. Range [0, inf)."""
    return float(np.mean(np.abs(pred - true))) if len(true) else float("nan")


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC = P(score of a random positive > score of a random negative), ties count 1/2. Range [0, 1]."""
    labels = labels.astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties so that equal scores count one half.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(prob: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    """-mean [y log p + (1 - y) log(1 - p)]. Range [0, inf); 0.693 for p = 0.5 everywhere."""
    p = np.clip(prob, eps, 1 - eps)
    y = labels.astype(np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else float("nan")
