"""Item-to-item co-occurrence (item-kNN) over time-ordered sessions, with a popularity prior.

score(user, j) = sum_h w(h) * sim(h, j) + prior * pop(j), where h runs over the user's last
items (recent ones weigh more) and sim counts how often j followed h closely in other users'
sequences, normalised by both items' popularity (asymmetric cosine).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys.data.interactions import Interactions
from recsys.models.base import write_meta
from recsys.models.popularity import PopularityModel

# Stronger behaviours say more about what goes together (index = schema.EVENT_TYPES).
EVENT_WEIGHT = np.array([1.0, 2.0, 3.0, 4.0, 2.0], dtype=np.float32)


@dataclass
class CooccurrenceModel:
    # Items this many steps apart in a sequence still count as related (decaying as 1/d).
    window: int = 5
    # "Bought before" is weaker evidence than "bought after" for next-item prediction.
    backward_weight: float = 0.5
    # Keep this many neighbours per item: bounded memory for large catalogues.
    neighbours: int = 200
    # Only the user's last items drive the list; older taste is mostly stale.
    history_len: int = 20
    history_decay: float = 0.8
    # Share of the score from recent popularity (each user's co-occurrence scores are scaled to
    # [0, 1] first, so the blend means the same on every dataset); new items and trends live there.
    popularity_prior: float = 0.3
    # Recent popularity looks back this far (as the popularity baseline does).
    popularity_window_days: int = 7
    # 0.5 = cosine; lower favours niche neighbours.
    alpha: float = 0.5
    kind: str = field(default="cooc", init=False)

    def __post_init__(self) -> None:
        self.sim = sp.csr_matrix((0, 0), dtype=np.float32)
        self.pop = np.zeros(0, dtype=np.float32)
        self.recent = np.zeros(0, dtype=np.float32)

    def fit(self, train: Interactions, valid=None) -> "CooccurrenceModel":
        n = train.n_items
        user, item = train.user, train.item  # sorted by (user, ts)
        weight = EVENT_WEIGHT[train.event]
        rows, cols, vals = [], [], []
        for d in range(1, self.window + 1):
            same = user[d:] == user[:-d]
            a, b = item[:-d][same], item[d:][same]
            w = weight[d:][same] / d
            keep = a != b
            rows += [a[keep], b[keep]]
            cols += [b[keep], a[keep]]
            vals += [w[keep], w[keep] * self.backward_weight]
        counts = sp.coo_matrix(
            (np.concatenate(vals) if vals else [], (np.concatenate(rows) if rows else [], np.concatenate(cols) if cols else [])),
            shape=(n, n), dtype=np.float32,
        ).tocsr()
        self.pop = np.bincount(item, weights=weight, minlength=n).astype(np.float32)
        self.recent = PopularityModel(self.popularity_window_days).fit(train).counts
        norm_a = np.power(np.maximum(self.pop, 1.0), self.alpha)
        norm_b = np.power(np.maximum(self.pop, 1.0), 1.0 - self.alpha)
        sim = sp.diags(1.0 / norm_a) @ counts @ sp.diags(1.0 / norm_b)
        self.sim = _top_per_row(sim.tocsr(), self.neighbours)
        return self

    def _history_matrix(self, histories: list[np.ndarray]) -> sp.csr_matrix:
        tails = [np.asarray(h[-self.history_len :]) for h in histories]
        lens = np.fromiter((len(t) for t in tails), dtype=np.int64, count=len(tails))
        cols = np.concatenate(tails).astype(np.int64) if len(tails) else np.zeros(0, np.int64)
        rows = np.repeat(np.arange(len(tails), dtype=np.int64), lens)
        keep = cols < self.sim.shape[0]  # items newer than the model have no row yet
        rows, cols = rows[keep], cols[keep]
        # Steps back from each history's last kept item: weight history_decay ** steps.
        kept = np.bincount(rows, minlength=len(tails))
        ends = np.cumsum(kept)
        back = ends[rows] - 1 - np.arange(len(rows))
        vals = (self.history_decay ** back).astype(np.float32)
        return sp.csr_matrix((vals, (rows, cols)), shape=(len(histories), self.sim.shape[0]))

    def cooccurrence(self, histories: list[np.ndarray]) -> sp.csr_matrix:
        """(B, n_items) float32 co-occurrence part of `score`, each row scaled to a maximum of 1.
        Sparse: a row holds at most history_len x neighbours entries, a catalogue row far more."""
        # A sparse product holds no duplicate entries (its indices may be unsorted: no matter here).
        s = (self._history_matrix(histories) @ self.sim).tocsr().astype(np.float32, copy=False)
        nonempty = np.flatnonzero(np.diff(s.indptr))
        top = np.zeros(s.shape[0], dtype=np.float32)
        if len(nonempty):
            top[nonempty] = np.maximum.reduceat(s.data, s.indptr[nonempty])
        # A dense row's max also sees its zeros; max(., 1e-12) makes that the same divisor.
        s.data /= np.repeat(np.maximum(top, 1e-12), np.diff(s.indptr))
        return s

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        scores = np.asarray(self.cooccurrence(histories).todense(), dtype=np.float32)
        prior = np.log1p(self.recent) / max(np.log1p(self.recent.max(initial=0.0)), 1e-9)
        return (1.0 - self.popularity_prior) * scores + self.popularity_prior * prior

    def explain(self, history: np.ndarray, items: np.ndarray) -> list[str]:
        tail = np.asarray(history[-self.history_len :], dtype=np.int64)
        tail = tail[tail < self.sim.shape[0]]
        if not len(tail):
            return ["popular"] * len(items)
        w = self.history_decay ** np.arange(len(tail))[::-1]
        # sim[tail][:, items] would index a million-item catalogue's columns at a cost per column;
        # the tail's few rows hold at most `neighbours` entries each, looked up among the items.
        rows = self.sim[tail]
        items = np.asarray(items, dtype=np.int64)
        order = np.argsort(items, kind="stable")
        at = np.minimum(np.searchsorted(items[order], rows.indices), len(items) - 1)
        hit = items[order][at] == rows.indices
        contrib = np.zeros((len(tail), len(items)))
        contrib[np.repeat(np.arange(len(tail)), np.diff(rows.indptr))[hit], order[at[hit]]] = rows.data[hit]
        contrib *= w[:, None]  # (H, K)
        best = contrib.argmax(0)
        return [f"because of {int(tail[b])}" if contrib[b, k] > 0 else "popular" for k, b in enumerate(best)]

    def save(self, path: Path) -> None:
        write_meta(path, self.kind, {k: v for k, v in asdict(self).items() if k != "kind"})
        sp.save_npz(path / "sim.npz", self.sim)
        np.save(path / "pop.npy", self.pop)
        np.save(path / "recent.npy", self.recent)

    def load_state(self, path: Path) -> None:
        self.sim = sp.load_npz(path / "sim.npz").tocsr().astype(np.float32)
        self.pop = np.load(path / "pop.npy")
        self.recent = np.load(path / "recent.npy")


def _top_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the k largest entries of each row (bounded neighbour lists). Only rows longer than k
    are visited one by one: a large catalogue has a million rows, most of them short."""
    counts = np.diff(m.indptr)
    keep = np.ones(len(m.data), dtype=bool)
    for r in np.flatnonzero(counts > k):
        lo, hi = m.indptr[r], m.indptr[r + 1]
        keep[np.argpartition(-m.data[lo:hi], k)[k:] + lo] = False
    rows = np.repeat(np.arange(m.shape[0]), counts)
    return sp.csr_matrix((m.data[keep].astype(np.float32), (rows[keep], m.indices[keep])), shape=m.shape)
