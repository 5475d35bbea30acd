"""MTRLModel: the multi-task RL network behind the project's Recommender protocol.

    model = build_model("mtrl", preset="full", text_path="item_text.npy")
    model.fit(train, validation_cases(data))     # early stopping on valid NDCG@10
    scores = model.score(histories)              # (B, n_items) float32
    model.save(folder); load_model(folder)       # model.json + weights.safetensors (+ memory/)

With the item memory on (the default, memory.py) scores are the network's next-item
log-probabilities plus the memory's weighted log-probabilities; without it they are the
network's scores, and the scoring fast path (user vectors x item vectors) applies.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch

from recsys.data.interactions import Interactions
from recsys.errors import ConfigError
from recsys.models.base import write_meta
from recsys.models.mtrl.checkpoint import WEIGHTS_FILE, load_checkpoint, save_checkpoint
from recsys.models.mtrl.config import make_config, with_changes
from recsys.models.mtrl.memory import ItemMemory, choose_weight
from recsys.models.mtrl.train import effective_config, history_vectors, item_vectors, score_histories, train


log = logging.getLogger(__name__)
MEMORY_DIR = "memory"
# Memory weight when there are no validation cases to choose one on.
FALLBACK_MEMORY_WEIGHT = 1.0


class MTRLModel:
    kind = "mtrl"

    def __init__(self, preset: str = "full", text_path: str | None = None, init_from: str | None = None, **overrides):
        """preset: full | no_text | no_q | no_behaviour | no_memory | sasrec_ce; overrides: MTRLConfig fields.

        text_path: .npy (n_items_at_encode_time, D) float32, row i = item_idx i, zeros = no text.
        init_from: a saved mtrl model folder (the champion) to warm-start from.
        """
        self.cfg = make_config(preset, **overrides)
        self.params = {"preset": preset, "text_path": text_path, **overrides}
        self.text_path, self.init_from = text_path, init_from
        self.net = None
        self.meta: dict = {}
        self.memory: ItemMemory | None = None
        self.memory_weight = 0.0

    # --- training ---
    def fit(
        self, train_data: Interactions, valid=None, out_dir: Path | None = None, refit_data: Interactions | None = None
    ) -> "MTRLModel":
        """Train on `train_data`, stopping early on `valid`; then, when `refit_data` (train plus
        the validation interactions) is given, `refit_epochs` more epochs over it, so the model
        also learns from the data early stopping held out."""
        text = self._read_text()
        init = load_checkpoint(Path(self.init_from) / WEIGHTS_FILE) if self.init_from else None
        art = train(self.cfg, train_data, valid, text=text, init=init, out_dir=out_dir)
        self.net, self.meta = art.net, art.meta
        if self.cfg.memory:
            # Before the refit: the weight is chosen on `valid`, which the refit then learns from.
            self._fit_memory(train_data, valid)
        if refit_data is not None and self.cfg.refit_epochs > 0:
            more = with_changes(self.net.cfg, max_epochs=self.cfg.refit_epochs, max_steps=0)
            refit = train(more, refit_data, None, text=text, init=(self.net, self.meta), progress=False)
            self.net = refit.net
            self.meta["refit"] = {"epochs": self.cfg.refit_epochs, "interactions": int(len(refit_data.item)),
                                  "seconds": refit.meta.get("seconds")}  # fmt: skip
        if refit_data is not None and self.memory is not None:
            self.memory = ItemMemory.fit(refit_data)  # it counts the refit log too, keeping its weight
        return self

    def _fit_memory(self, train_data: Interactions, valid) -> None:
        """Build the item memory on the training log and choose its weight on `valid`, where the
        network's own early-stopping choice was made."""
        self.memory = ItemMemory.fit(train_data)
        if self.cfg.memory_weight >= 0:
            weight, how = self.cfg.memory_weight, "configured"
        elif valid is not None and len(valid.histories):
            weight, table = choose_weight(self._network_scores, self.memory, valid)
            how = {f"{w:g}": round(v, 5) for w, v in table.items()}
        else:
            weight, how = FALLBACK_MEMORY_WEIGHT, "no validation cases: fallback"
        self.memory_weight = float(weight)
        self.meta["memory"] = {"weight": self.memory_weight, "valid_ndcg@10": how}
        log.info("mtrl: item memory weight %.2f (%s)", self.memory_weight, how)

    def effective_config(self, train_data: Interactions) -> tuple[dict, list[str]]:
        """The settings `fit` would train with on this data, and why any differ from the preset."""
        cfg, notes = effective_config(self.cfg, train_data, self._read_text())
        return cfg.to_dict(), notes

    def _read_text(self) -> np.ndarray | None:
        if not self.text_path:
            return None
        path = Path(self.text_path)
        if not path.exists():
            raise ConfigError(f"mtrl: text_path {path} does not exist (run the encode stage first)")
        text = np.load(path)
        if text.ndim != 2:
            raise ConfigError(f"mtrl: {path} must be a 2-d (items, dim) matrix, got shape {text.shape}")
        return text.astype(np.float32, copy=False)

    # --- serving ---
    def _ready(self):
        if self.net is None:
            raise ConfigError("mtrl: model is not trained or loaded")
        return self.net

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        """(B,) item_idx histories -> (B, n_items); every step is taken as the most common behaviour."""
        return self.score_events(histories, None)

    def score_events(self, histories: list[np.ndarray], events: list[np.ndarray] | None, ts: list[np.ndarray] | None = None) -> np.ndarray:
        """As score(), with each step's behaviour (schema.EVENT_TYPES index) and optional µs timestamps."""
        scores = self._network_scores(histories, events, ts)
        if self.factorised:
            return scores
        return self.memory.mix(scores, list(histories), self.memory_weight)

    def _network_scores(self, histories, events=None, ts=None) -> np.ndarray:
        net = self._ready()
        return score_histories(net, list(histories), events, ts, default_type=self.meta.get("default_type", 0))

    def network_only(self) -> "MTRLModel":
        """This model without its item memory: the network's own ranking (the same weights)."""
        view = copy.copy(self)
        view.memory, view.memory_weight = None, 0.0
        view.cfg = with_changes(self.cfg, memory=False)
        return view

    @property
    def factorised(self) -> bool:
        """Whether scores are user_vectors @ item_vectors.T (so the fast path applies)."""
        return self.memory is None or self.memory_weight <= 0

    # the scoring fast path (recsys.scoring.Factorised): score = user_vectors @ item_vectors.T
    def user_vectors(self, histories: list[np.ndarray]) -> np.ndarray:
        return history_vectors(self._ready(), list(histories), default_type=self.meta.get("default_type", 0))

    def item_vectors(self) -> np.ndarray:
        return item_vectors(self._ready())

    def set_item_text(self, matrix: np.ndarray) -> None:
        """Grow the catalogue to matrix's rows; items newer than the model get a text-only vector."""
        net = self._ready()
        text = torch.from_numpy(np.asarray(matrix, np.float32))
        if net.text_proj is not None and text.shape[1] != net.text.shape[1]:
            raise ConfigError(f"mtrl: text dim {text.shape[1]} != trained dim {net.text.shape[1]}")
        net.grow_items(max(len(text), net.n_items), text)

    def explain(self, history: np.ndarray, items: np.ndarray) -> list[str]:
        """Per item: the history step whose representation is closest (cosine) to it."""
        net = self._ready()
        tail = np.asarray(history, np.int64)[-net.cfg.max_len :]
        tail = tail[tail < net.n_items]
        if not len(tail):
            return ["popular"] * len(items)
        with torch.no_grad():
            table = torch.nn.functional.normalize(net.item_table(), dim=-1)
            idx = torch.from_numpy(np.minimum(np.asarray(items, np.int64), net.n_items - 1))
            sim = table[idx] @ table[torch.from_numpy(tail)].T  # (K, H)
            best = sim.argmax(1).numpy()
        return [f"because of {int(tail[b])}" for b in best]

    # --- persistence ---
    def save(self, path: Path) -> None:
        path = Path(path)
        write_meta(path, self.kind, self.params)
        save_checkpoint(path / WEIGHTS_FILE, self._ready(), self.meta)
        if self.memory is not None:
            self.memory.save(path / MEMORY_DIR)

    def load_state(self, path: Path) -> None:
        self.net, self.meta = load_checkpoint(Path(path) / WEIGHTS_FILE)
        self.net.eval()
        self.cfg = self.net.cfg
        mem = Path(path) / MEMORY_DIR
        self.memory = ItemMemory.load(mem) if self.cfg.memory and mem.is_dir() else None
        self.memory_weight = float(self.meta.get("memory", {}).get("weight", 0.0)) if self.memory else 0.0
