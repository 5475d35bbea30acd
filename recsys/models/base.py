"""What every recommender offers the pipeline: fit, score histories, save, load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

from recsys.data.interactions import Interactions
from recsys.errors import ConfigError

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # avoids an import cycle at run time
    from recsys.evaluate.protocol import EvalCases

META_FILE = "model.json"


class Recommender(Protocol):
    kind: str

    def fit(self, train: Interactions, valid: "EvalCases | None" = None) -> "Recommender":
        """Learn from `train` (`train.n_items` is the catalogue size); models that stop early
        rank `valid` (histories -> held-out items) between epochs, baselines ignore it."""

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        """(B,) item_idx sequences in time order -> (B, n_items) float32 scores, higher is better."""

    def explain(self, history: np.ndarray, items: np.ndarray) -> list[str]:
        """One short reason per recommended item (what in the history led to it)."""

    def save(self, path: Path) -> None: ...


# kind -> "module:Class", imported on use so that baselines never pay for importing torch.
MODEL_CLASSES = {
    "popularity": "recsys.models.popularity:PopularityModel",
    "cooc": "recsys.models.cooc:CooccurrenceModel",
    "mtrl": "recsys.models.mtrl:MTRLModel",
}


def build_model(kind: str, **params) -> Recommender:
    import importlib

    if kind not in MODEL_CLASSES:
        raise ConfigError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_CLASSES)}")
    module, cls = MODEL_CLASSES[kind].split(":")
    return getattr(importlib.import_module(module), cls)(**params)


def write_meta(path: Path, kind: str, params: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / META_FILE).write_text(json.dumps({"kind": kind, "params": params}, indent=2))


def load_model(path: Path) -> Recommender:
    """Load any saved model from its folder; the folder's model.json names the class."""
    meta_file = Path(path) / META_FILE
    if not meta_file.exists():
        raise ConfigError(f"{path}: not a model folder (no {META_FILE})")
    meta = json.loads(meta_file.read_text())
    model = build_model(meta["kind"], **meta["params"])
    model.load_state(Path(path))
    return model
