"""MTRLModel: the multi-task RL network behind the project's Recommender protocol.

    model = build_model("mtrl", preset="full", text_path="item_text.npy")
    model.fit(train, validation_cases(data))     # early stopping on valid NDCG@10
    scores = model.score(histories)              # (B, n_items) float32
    model.save(folder); load_model(folder)       # model.json + weights.safetensors (+ memory/)

The served score (blend.py) is the ranking head's next-item log-probability plus, with
weights chosen on the validation cases by expected reward, the item memory (memory.py), the
Q head's advantage, the behaviour heads' log pCTCVR and a popularity prior for short
histories. Where every weight is 0 the score is the ranking head's alone, and the scoring
fast path (user vectors x item vectors) applies; otherwise recsys.scoring ranks from
`block_scorer`, which writes the served score, less a per-user constant, block by block
(served.py).
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import torch

from recsys.data.interactions import Interactions
from recsys.errors import ConfigError
from recsys.models.base import write_meta
from recsys.models.mtrl.checkpoint import WEIGHTS_FILE, load_checkpoint, save_checkpoint
from recsys.models.mtrl.config import make_config, with_changes
from recsys.models.mtrl.blend import (
    Blend, choice_users, choose_blend, network_parts, popularity_log, target_gains,
)
from recsys.models.mtrl.memory import ItemMemory
from recsys.models.mtrl.served import ServedScorer
from recsys.models.mtrl.inference import history_vectors, item_vectors, score_histories
from recsys.models.mtrl.train import effective_config, train


log = logging.getLogger(__name__)
MEMORY_DIR = "memory"
PRIOR_FILE = "prior.npy"
# Memory weight when there are no validation cases to choose one on.
FALLBACK_MEMORY_WEIGHT = 1.0
DAY_US = 86_400_000_000
# The prior's window widens until it holds at least this share of the log (thin recent days).
PRIOR_MIN_SHARE = 0.1


class MTRLModel:
    kind = "mtrl"
    # score() and user_vectors() take each history step's behaviour (recsys.scoring.reads_events):
    # the encoder was trained on them, and a history of views only reads differently.
    reads_events = True

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
        self.blend = Blend()
        self.prior: np.ndarray | None = None  # (I,) log p_pop, see blend.py

    # --- training ---
    def fit(
        self, train_data: Interactions, valid=None, out_dir: Path | None = None, refit_data: Interactions | None = None
    ) -> "MTRLModel":
        """Train on `train_data`, stopping early on `valid`; then, when `refit_data` (train plus
        the validation interactions) is given, `refit_epochs` more epochs over it, so the model
        also learns from the data early stopping held out."""
        t_fit = time.perf_counter()
        text = self._read_text()
        init = load_checkpoint(Path(self.init_from) / WEIGHTS_FILE) if self.init_from else None
        art = train(self.cfg, train_data, valid, text=text, init=init, out_dir=out_dir)
        self.net, self.meta = art.net, art.meta
        t_side = time.perf_counter()
        if self.cfg.memory:
            self.memory = ItemMemory.fit(train_data)
        if self.cfg.reward_blend:
            self.prior = popularity_log(prior_counts(train_data, self.cfg.prior_days, self.net.n_items))
        side = time.perf_counter() - t_side  # done again after the refit, on its log
        # Before the refit: the weights are chosen on `valid`, which the refit then learns from.
        self._choose_blend(valid)
        # The refit trains in what the budget has left (train() stopped early enough for it),
        # less the memory and prior it fits again after; without a budget, `left` stays 0, which
        # is no limit.
        budget = self.cfg.budget_seconds
        left = budget - (time.perf_counter() - t_fit) - side if budget > 0 else 0.0
        if refit_data is not None and self.cfg.refit_epochs > 0 and budget > 0 and left <= 0:
            self.meta["notes"].append(f"no refit: the {budget:g} s budget is spent")
        elif refit_data is not None and self.cfg.refit_epochs > 0:
            more = with_changes(self.net.cfg, max_epochs=self.cfg.refit_epochs, max_steps=0, refit_epochs=0, budget_seconds=left)
            # Every window, not a warm start's share. self.meta keeps the early-stopped run's
            # data_end_us: a day seen in one refit epoch only is still new to the next warm start.
            refit = train(more, refit_data, None, text=text, init=(self.net, self.meta), progress=False, fine_tune=False)
            self.net = refit.net
            self.meta["refit"] = {"epochs": self.cfg.refit_epochs, "interactions": int(len(refit_data.item)),
                                  "seconds": refit.meta.get("seconds")}  # fmt: skip
            if "budget_stop" in refit.meta:
                self.meta["refit"]["budget_stop"] = refit.meta["budget_stop"]
            said = [n for n in refit.meta["notes"] if not n.startswith("warm start")]  # it starts from self.net
            if said:
                self.meta["refit"]["notes"] = said
        if refit_data is not None:
            # The memory and the prior count the refit log too, keeping their weights.
            if self.memory is not None:
                self.memory = ItemMemory.fit(refit_data)
            if self.prior is not None:
                self.prior = popularity_log(prior_counts(refit_data, self.cfg.prior_days, self.net.n_items))
        return self

    def _choose_blend(self, valid) -> None:
        """The served score's weights (blend.py), chosen on `valid` where the network's own
        early-stopping choice was made; configured or fallback values where there is none."""
        fixed_memory = self.cfg.memory_weight if self.cfg.memory_weight >= 0 else None
        if self.memory is None:
            fixed_memory = 0.0
        if valid is None or not len(valid.histories) or not (self.cfg.reward_blend or fixed_memory is None):
            memory = FALLBACK_MEMORY_WEIGHT if fixed_memory is None else fixed_memory
            self.blend = Blend(memory=memory, chosen_on={"note": "no validation cases or nothing to choose"})
        else:
            n = choice_users(len(valid.users), self.net.n_items, 5)
            keep = np.zeros(len(valid.users), bool)
            keep[np.random.default_rng(self.cfg.seed).choice(len(valid.users), n, replace=False)] = True
            cases = valid.subset(keep)
            parts = network_parts(self.net, cases.histories, self.meta.get("default_type", 0), cases.history_events)
            if not self.cfg.reward_blend:
                parts = {"rank": parts["rank"]}
            # a configured memory weight stays in the score while the other weights are chosen
            memory_log = self.memory.log_scores(cases.histories, self.net.n_items) if fixed_memory != 0.0 else None
            gains = target_gains(cases, self.cfg.rewards, self.cfg.gain_floor)
            self.blend = choose_blend(parts, cases, gains, memory_log, self.prior, memory=fixed_memory)
        self.meta["blend"] = self.blend.to_dict()
        log.info("mtrl: served blend %s", {k: v for k, v in self.meta["blend"].items() if k != "chosen_on"})

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

    def score(self, histories: list[np.ndarray], events: list[np.ndarray] | None = None) -> np.ndarray:
        """(B,) item_idx histories -> (B, n_items); without `events` (each step's behaviour)
        every step is taken as the most common behaviour."""
        return self.score_events(histories, events)

    def score_events(self, histories: list[np.ndarray], events: list[np.ndarray] | None, ts: list[np.ndarray] | None = None) -> np.ndarray:
        """As score(), with each step's behaviour (schema.EVENT_TYPES index) and optional µs timestamps."""
        histories = list(histories)
        if self.factorised:
            return score_histories(self._ready(), histories, events, ts, default_type=self.meta.get("default_type", 0))
        return self.block_scorer()(histories, events, ts).cpu().numpy()

    def block_scorer(self) -> ServedScorer:
        """The served score for blocks of histories, into a buffer the caller may reuse: what
        recsys.scoring ranks from when the blend leaves the fast path."""
        return ServedScorer(self)

    @property
    def memory_weight(self) -> float:
        return self.blend.memory if self.memory is not None else 0.0

    def network_only(self) -> "MTRLModel":
        """This model's ranking head alone: no memory, no reward blend (the same weights)."""
        return self.with_blend(Blend())

    def with_blend(self, blend: Blend) -> "MTRLModel":
        """A view of this model serving `blend` instead of the chosen one (the same network)."""
        view = copy.copy(self)
        view.blend = blend
        if blend.memory <= 0:
            view.memory = None
            view.cfg = with_changes(self.cfg, memory=False)
        return view

    @property
    def factorised(self) -> bool:
        """Whether scores are user_vectors @ item_vectors.T (so the fast path applies): no term
        of the blend beside the ranking head is active."""
        b = self.blend
        memory = self.memory is not None and b.memory > 0
        prior = self.prior is not None and any(w > 0 for w in b.pop)
        return not (memory or prior or b.q > 0 or b.buy > 0)

    # the scoring fast path (recsys.scoring.Factorised): score = user_vectors @ item_vectors.T
    def user_vectors(self, histories: list[np.ndarray], events: list[np.ndarray] | None = None) -> np.ndarray:
        return history_vectors(self._ready(), list(histories), events, default_type=self.meta.get("default_type", 0))

    def item_vectors(self) -> np.ndarray:
        return item_vectors(self._ready())

    def set_item_text(self, matrix: np.ndarray) -> None:
        """Grow the catalogue to matrix's rows; items newer than the model get a text-only vector."""
        net = self._ready()
        text = torch.from_numpy(np.asarray(matrix, np.float32))
        if net.text_proj is not None and text.shape[1] != net.text.shape[1]:
            raise ConfigError(f"mtrl: text dim {text.shape[1]} != trained dim {net.text.shape[1]}")
        net.grow_items(max(len(text), net.n_items), text)

    def explain_vectors(self) -> np.ndarray:
        """(n_items, D) unit item vectors: a recommended item's reason is the history item closest
        to it (cosine), computed for all users in blocks (recsys.scoring.explain_by_vectors)."""
        with torch.no_grad():
            return torch.nn.functional.normalize(self._ready().item_table(), dim=-1).numpy()

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
        if self.prior is not None:
            np.save(path / PRIOR_FILE, self.prior)

    def load_state(self, path: Path) -> None:
        self.net, self.meta = load_checkpoint(Path(path) / WEIGHTS_FILE)
        self.net.eval()
        self.cfg = self.net.cfg
        mem = Path(path) / MEMORY_DIR
        self.memory = ItemMemory.load(mem) if self.cfg.memory and mem.is_dir() else None
        self.blend = Blend.from_dict(self.meta["blend"]) if "blend" in self.meta else Blend()
        prior = Path(path) / PRIOR_FILE
        self.prior = np.load(prior) if prior.exists() else None


def prior_counts(data: Interactions, days: int, n_items: int) -> np.ndarray:
    """Distinct users per item over the last `days` of `data`, the window widened to hold at
    least PRIOR_MIN_SHARE of the interactions (public logs with thin recent days)."""
    if not len(data.ts):
        return np.zeros(n_items, np.float32)
    cut = min(data.ts.max() - days * DAY_US, np.quantile(data.ts, 1.0 - PRIOR_MIN_SHARE))
    recent = data.ts >= cut
    pairs = np.unique(np.stack([data.item[recent].astype(np.int64), data.user[recent].astype(np.int64)]), axis=1)
    return np.bincount(pairs[0], minlength=n_items)[:n_items].astype(np.float32)
