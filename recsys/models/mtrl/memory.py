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

from pathlib import Path

import numpy as np
import torch

from recsys.data.interactions import Interactions
from recsys.models.cooc import CooccurrenceModel

# The memory's floor: an item it has no evidence for scores as if it had this probability.
EPS = 1e-6


class ItemMemory:
    def __init__(self, knn: CooccurrenceModel):
        self.knn = knn

    @classmethod
    def fit(cls, data: Interactions) -> "ItemMemory":
        # Popularity is already in the network's softmax: the memory holds co-occurrence only.
        return cls(CooccurrenceModel(popularity_prior=0.0).fit(data))

    def distribution(self, histories: list[np.ndarray], width: int) -> np.ndarray:
        """(B, width) float32: each row sums to one, or is all zero where the memory knows nothing.
        Items beyond the memory's catalogue (newer than its log) get zero."""
        s = np.clip(self.knn.score(histories), 0.0, None)[:, :width]
        if s.shape[1] < width:
            s = np.pad(s, ((0, 0), (0, width - s.shape[1])))
        total = s.sum(axis=1, keepdims=True)
        return np.divide(s, total, out=np.zeros_like(s), where=total > 0)

    def log_scores(self, histories: list[np.ndarray], width: int) -> np.ndarray:
        """(B, width) float32 m(i | history) of the module docstring; a row is all zero where the
        memory has no evidence for that history (a constant: the network's order stands)."""
        p = self.distribution(histories, width)
        out = np.log(p + EPS, dtype=np.float32)
        known = np.zeros(width, dtype=bool)
        n = min(width, len(self.knn.pop))
        known[:n] = self.knn.pop[:n] > 0
        typical = (p * out).sum(axis=1, keepdims=True)  # E_{j ~ p_mem} log p_mem(j)
        out[:, ~known] = np.broadcast_to(typical, (len(out), int((~known).sum())))
        out[p.sum(axis=1) == 0] = 0.0
        return out

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
