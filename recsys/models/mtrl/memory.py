"""Item-to-item memory beside the network, combined with its next-item distribution.

    score(i | history) = log_softmax(network scores)_i + w m(i | history)
    m(i | history) = log(p_mem(i | history) + eps)   for an item in the memory's log
                     sum_j p_mem(j) log(p_mem(j) + eps) for one it has never seen

p_mem is the item-kNN model's co-occurrence score of i for the history (items that followed
the user's last items closely in other users' sequences), normalised to sum to one. This is a
product of experts (Hinton 2002): an item ranks high when both the network and the memory
give it mass, and the weight w, chosen on the validation cases with the served blend's other
weights (blend.py, never on test), says how sharp the memory's vote is. A linear mixture of the two distributions (kNN-LM, Khandelwal et
al. 2020) was measured too and barely moved the ranking: the network's distribution is the
sharper one, so its top items stay on top until the memory weighs 0.9 (docs/MODEL.md).

Why: a network learns an item's vector from that item's interactions, and on small logs most
items have a handful. Counting needs no more than that, so on MovieLens latest-small (610
users) item-kNN beats every sequence model, while the network knows each user's taste across
the whole history. With no memory evidence for a user (p_mem = 0) the score is the network's
log-probability plus a constant, so it ranks exactly as the network does. An item with no
interactions in the memory's log (new, known by its text alone) is one the memory cannot
judge: it scores as a typical item of the memory's own distribution (the expected
log-probability, minus its entropy), neither floored nor favoured, so the network's text
vector decides where it ranks and cold start through text keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recsys.data.interactions import Interactions
from recsys.models.cooc import CooccurrenceModel

# The memory's floor: an item it has no evidence for scores as if it had this probability.
EPS = 1e-6


@dataclass
class MemoryLog:
    """m(i | history) of the module docstring for a block of histories, kept sparse.

    A row where the memory has evidence is log(EPS) (`floor`) for a known item it gives no mass,
    `log_p` at the few items it does (each history's neighbours: a small share of the catalogue)
    and `typical` for an item it never saw; a row without evidence is all zero. `dense()` is the
    (B, width) matrix; the served score adds the parts straight into its own buffer instead.
    """

    rows: np.ndarray  # (n,) int64, the entries with p > 0 in known items
    cols: np.ndarray  # (n,) int64
    log_p: np.ndarray  # (n,) float32 log(p + EPS)
    typical: np.ndarray  # (B,) float32 E_{j ~ p_mem} log p_mem(j)
    evidence: np.ndarray  # (B,) bool: the memory gives this history any mass
    known: np.ndarray  # (width,) bool: items with interactions in the memory's log
    cells: np.ndarray  # (n,) int64 rows * width + cols: the entries' places in the flat matrix
    floor: np.float32 = np.log(np.zeros(1, np.float32) + EPS, dtype=np.float32)[0]  # as log(p + EPS) at p = 0

    def dense(self) -> np.ndarray:
        out = np.full((len(self.evidence), len(self.known)), self.floor, dtype=np.float32)
        out.reshape(-1)[self.cells] = self.log_p
        out[:, ~self.known] = self.typical[:, None]
        out[~self.evidence] = 0.0
        return out


class ItemMemory:
    def __init__(self, knn: CooccurrenceModel):
        self.knn = knn

    @classmethod
    def fit(cls, data: Interactions) -> "ItemMemory":
        # Popularity is already in the network's softmax: the memory holds co-occurrence only.
        return cls(CooccurrenceModel(popularity_prior=0.0).fit(data))

    def _sparse_distribution(self, histories: list[np.ndarray], width: int):
        """(rows, cols, p) of the entries with p > 0, their places rows * width + cols in the flat
        (B, width) matrix, and each row's total mass (B,) before normalising. Items beyond the
        memory's catalogue (newer than its log) get zero."""
        s = self.knn.cooccurrence(histories)
        n = len(histories)
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(s.indptr))
        cols = s.indices.astype(np.int64)
        keep = (s.data > 0) & (cols < width)
        rows, cols, mass = rows[keep], cols[keep], s.data[keep]
        total = np.bincount(rows, weights=mass, minlength=n)
        p = (mass / total[rows]).astype(np.float32) if len(rows) else np.zeros(0, np.float32)
        return rows, cols, rows * width + cols, p, total

    def known(self, width: int) -> np.ndarray:
        """(width,) bool: the items with interactions in the memory's log."""
        known = np.zeros(width, dtype=bool)
        m = min(width, len(self.knn.pop))
        known[:m] = self.knn.pop[:m] > 0
        return known

    def distribution(self, histories: list[np.ndarray], width: int) -> np.ndarray:
        """(B, width) float32: each row sums to one, or is all zero where the memory knows nothing.
        Items beyond the memory's catalogue (newer than its log) get zero."""
        _, _, at, p, _ = self._sparse_distribution(histories, width)
        out = np.zeros((len(histories), width), np.float32)
        out.reshape(-1)[at] = p
        return out

    def sparse_log(self, histories: list[np.ndarray], width: int) -> MemoryLog:
        """m(i | history) of the module docstring for (B,) histories over `width` items, sparse."""
        rows, cols, at, p, total = self._sparse_distribution(histories, width)
        log_p = np.log(p + EPS, dtype=np.float32)
        # E_{j ~ p_mem} log p_mem(j) (p = 0 adds 0).
        typical = np.bincount(rows, weights=p * log_p, minlength=len(histories)).astype(np.float32)
        known = self.known(width)
        keep = known[cols]  # an item never seen scores as typical, whatever its mass
        return MemoryLog(rows[keep], cols[keep], log_p[keep], typical, total > 0, known, at[keep])

    def log_scores(self, histories: list[np.ndarray], width: int) -> np.ndarray:
        """(B, width) float32 m(i | history) of the module docstring; a row is all zero where the
        memory has no evidence for that history (a constant: the network's order stands)."""
        return self.sparse_log(histories, width).dense()

    def mix(self, scores: np.ndarray, histories: list[np.ndarray], weight: float) -> np.ndarray:
        """Network scores (B, I), taken as logits -> (B, I) combined log-scores."""
        logp = torch.log_softmax(torch.from_numpy(np.asarray(scores, np.float32)), dim=1)
        return _combine(logp, torch.from_numpy(self.log_scores(histories, logp.shape[1])), weight).numpy()

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.knn.save(path)

    @classmethod
    def load(cls, path: Path) -> "ItemMemory":
        knn = CooccurrenceModel(popularity_prior=0.0)
        knn.load_state(path)
        return cls(knn)


def _combine(logp: torch.Tensor, memory_log: torch.Tensor, weight: float) -> torch.Tensor:
    return logp if weight <= 0 else logp + weight * memory_log
