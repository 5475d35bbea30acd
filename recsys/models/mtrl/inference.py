"""Scoring a trained network: user vectors, the item table, scores, and validation NDCG.

Used by training (early stopping), by MTRLModel (serving) and by the torchrun entry point;
it imports nothing from train.py, so the two never depend on each other.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys.evaluate.metrics import ranking_report
from recsys.evaluate.protocol import EvalCases
from recsys.models.mtrl.batches import encode_histories
from recsys.models.mtrl.model import MTRLNet
from recsys.scoring import top_k


def encoded_blocks(net: MTRLNet, histories, events=None, ts=None, default_type: int = 0, block: int = 512):
    """Yield (slice, items, btype, gap, length) tensors on the network's device for each block of
    `block` histories, encoded as in training; ids newer than the network are clamped."""
    cfg, device = net.cfg, net.has_id.device
    for lo in range(0, len(histories), block):
        sl = slice(lo, lo + block)
        arrays = encode_histories(
            histories[sl], None if events is None else events[sl], None if ts is None else ts[sl],
            default_type, cfg.max_len, cfg.n_gap_buckets,
        )
        # Right-padded with causal attention: steps past the block's longest history change no
        # state that is read, so they are cut (short histories cost their length, not max_len).
        width = int(arrays[3].max(initial=1))
        items, btype, gap = (torch.from_numpy(a[:, :width]).to(device) for a in arrays[:3])
        length = torch.from_numpy(arrays[3]).to(device)
        yield sl, items.clamp(max=net.n_items - 1), btype, gap, length


@torch.no_grad()
def history_vectors(
    net: MTRLNet,
    histories: list[np.ndarray],
    events: list[np.ndarray] | None = None,
    ts: list[np.ndarray] | None = None,
    default_type: int = 0,
    block: int = 512,
) -> np.ndarray:
    """(B,) item_idx histories -> (B, D) float32 user vectors of the configured head."""
    cfg = net.cfg
    was_training = net.training
    net.eval()
    out = np.zeros((len(histories), cfg.d), np.float32)
    table = net.item_table()  # once for every block
    for sl, items, btype, gap, length in encoded_blocks(net, histories, events, ts, default_type, block):
        u = net.user_vectors(items, btype, gap, length, cfg.score_head, cfg.blend_weight, table)
        out[sl] = u.float().cpu().numpy()
    net.train(was_training)
    return out


@torch.no_grad()
def item_vectors(net: MTRLNet) -> np.ndarray:
    """(n_items, D) float32 item table; scores are history_vectors @ item_vectors.T."""
    return net.item_table().float().cpu().numpy()


def score_histories(net: MTRLNet, histories, events=None, ts=None, default_type: int = 0) -> np.ndarray:
    """(B,) item_idx histories -> (B, n_items) float32 scores with the configured head."""
    return history_vectors(net, histories, events, ts, default_type) @ item_vectors(net).T


class _Scorer:
    """The Recommender face of a bare network (score and the factorised fast path), for top_k."""

    reads_events = True

    def __init__(self, net: MTRLNet, default_type: int):
        self.net, self.default_type = net, default_type

    def score(self, histories, events=None):
        return score_histories(self.net, histories, events, default_type=self.default_type)

    def user_vectors(self, histories, events=None):
        return history_vectors(self.net, histories, events, default_type=self.default_type)

    def item_vectors(self):
        return item_vectors(self.net)


def evaluate(net: MTRLNet, cases: EvalCases, default_type: int, k: int = 10) -> dict[str, float]:
    """NDCG@k / HR@k ranking the full catalogue, history items excluded (the project protocol)."""
    items, _ = top_k(_Scorer(net, default_type), cases.histories, k, exclude=cases.exclude, events=cases.history_events)
    rep = ranking_report(items, cases.targets, ks=(k,))
    return {f"ndcg@{k}": rep[f"ndcg@{k}"], f"hr@{k}": rep[f"hr@{k}"]}
