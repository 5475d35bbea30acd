"""Most-popular items over a recent window: the baseline every model must beat."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from recsys.data.interactions import Interactions
from recsys.models.base import write_meta

DAY_US = 86_400_000_000


@dataclass
class PopularityModel:
    # Popularity decays fast in retail; a week keeps seasonal items without stale hits.
    window_days: int = 7
    kind: str = field(default="popularity", init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.float32)

    def fit(self, train: Interactions, valid=None) -> "PopularityModel":
        recent = train.ts >= (train.ts.max() - self.window_days * DAY_US) if len(train.ts) else train.ts > 0
        # Distinct users per item: one heavy user should not make an item "popular".
        pairs = np.unique(np.stack([train.item[recent], train.user[recent]]), axis=1)
        self.counts = np.bincount(pairs[0], minlength=train.n_items).astype(np.float32)
        return self

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        scores = np.log1p(self.counts) / max(np.log1p(self.counts.max(initial=0.0)), 1e-9)
        return np.broadcast_to(scores, (len(histories), len(self.counts))).copy()

    def explain(self, history: np.ndarray, items: np.ndarray) -> list[str]:
        return ["popular"] * len(items)

    def save(self, path: Path) -> None:
        write_meta(path, self.kind, {k: v for k, v in asdict(self).items() if k != "kind"})
        np.save(path / "counts.npy", self.counts)

    def load_state(self, path: Path) -> None:
        self.counts = np.load(path / "counts.npy")
