"""`recsys bench score`: the ranking routine vs one bare matrix multiply of the same shapes, same run.

By default the model is factorised and random (user and item vectors of dimension 64), so the
routine takes its fast path: per block of users, the matmul into a reused buffer, each user's
exclusions masked (their 10 history items), top-K, results back to numpy. With `model` (a saved
model folder, e.g. a night's trained `mtrl`) the routine is what the score stage runs for it
on random 10-item histories over its catalogue: `rank_users` through whichever path the model
takes (the item memory's is the general one), then the reasons, in blocks from one table. The
bound is `torch.matmul(users, items.T)` as one call producing the whole (U, I) score matrix at
the model's width, with the user vectors computed beforehand: no masking, no ranking; where
that matrix would pass BOUND_BYTES (100k users x 50k items is 20 GB) the same products are
made in blocks of `block_users` users into one reused buffer. Both run `repeats` times,
interleaved; the best of each counts.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys.bench.common import emit, machine, table, timed

DIM = 64
HISTORY = 10
# The bound's whole (U, I) result is held up to this size; above it, blocks of users.
BOUND_BYTES = 4 << 30


def _runs(times: list[float]) -> str:
    return ", ".join(f"{t:.3f}" for t in times)


class RandomFactorised:
    """score = mean of the history's item vectors . item vector, with random item vectors."""

    kind = "random-factorised"

    def __init__(self, n_items: int, dim: int = DIM, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.vectors = (rng.standard_normal((n_items, dim)) / np.sqrt(dim)).astype(np.float32)

    def user_vectors(self, histories: list[np.ndarray]) -> np.ndarray:
        return self.vectors[np.stack(histories)].mean(axis=1)

    def item_vectors(self) -> np.ndarray:
        return self.vectors

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        return self.user_vectors(histories) @ self.vectors.T

    def explain(self, history: np.ndarray, items: np.ndarray) -> list[str]:
        return ["popular"] * len(items)


def _saved(path: str):
    """A saved model, its catalogue size and its vector width (the bound's shapes)."""
    from pathlib import Path

    from recsys.models import load_model

    model = load_model(Path(path))
    vectors = model.explain_vectors() if callable(getattr(model, "explain_vectors", None)) else model.item_vectors()
    return model, vectors.shape[0], vectors.shape[1]


def run(users: int = 20_000, items: int = 20_000, k: int = 50, repeats: int = 3, block_users: int | None = None,
        device: str = "cpu", model_path: str | None = None) -> dict:
    from recsys.config import Settings
    from recsys.device import resolve_device
    from recsys.scoring import explain_by_vectors, rank_users

    host = machine()  # before the run loads the machine itself
    block = block_users or Settings.model_fields["score_block_users"].default
    dev = resolve_device(device)
    if model_path:
        model, items, dim = _saved(model_path)
    else:
        model, dim = RandomFactorised(items), DIM
    rng = np.random.default_rng(1)
    histories = list(rng.integers(0, items, (users, HISTORY)))
    exclude = [np.unique(h) for h in histories]
    user_t = torch.from_numpy(rng.standard_normal((users, dim), dtype=np.float32)).to(dev)
    item_t = torch.from_numpy(rng.standard_normal((items, dim), dtype=np.float32)).to(dev)
    reasons = getattr(model, "explain_vectors", None)

    def ours():
        ranking = rank_users(model, histories, k, exclude=exclude, block_users=block, device=dev)
        if callable(reasons):  # what the score stage adds for a trained model
            explain_by_vectors(reasons(), histories, ranking.items, block)
        return ranking

    whole = 4 * users * items <= BOUND_BYTES
    bound_buffer = None if whole else torch.empty((block, items), dtype=torch.float32, device=dev)

    def bare():
        with torch.inference_mode():
            if whole:
                out = torch.matmul(user_t, item_t.T)
            else:
                for lo in range(0, users, block):
                    part = user_t[lo : lo + block]
                    out = torch.matmul(part, item_t.T, out=bound_buffer[: len(part)])
            if dev.type == "cuda":
                torch.cuda.synchronize()
        return out.shape

    # Warm up both (thread pools, allocator, CUDA context) on a small slice.
    first = min(users, block)
    rank_users(model, histories[:first], k, exclude=exclude[:first], block_users=block, device=dev)
    with torch.inference_mode():
        torch.matmul(user_t[:block], item_t.T)
    routine, gemm = [], []
    result = None
    for rep in range(repeats):
        steps = [("routine", ours), ("gemm", bare)] if rep % 2 == 0 else [("gemm", bare), ("routine", ours)]
        for name, fn in steps:
            seconds, out = timed(fn, f"run {rep + 1}/{repeats}, {name}")
            (routine if name == "routine" else gemm).append(seconds)
            if name == "routine":
                result = out
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    assert result is not None and result.items.shape == (users, k)
    ranked = np.isfinite(result.scores)  # a short list (tiny catalogue) is padded with -inf
    assert not any(np.isin(result.items[u][ranked[u]], exclude[u]).any() for u in range(min(users, 1000)))
    seconds, gemm_s = min(routine), min(gemm)
    flops = 2.0 * users * items * dim
    rows = [
        ("ranking routine (matmul + masks + top-k)", seconds, flops / seconds / 1e9, _runs(routine)),
        ("bare torch.matmul (U, I) in one call" if whole else f"bare torch.matmul (U, I), {block} users a call",
         gemm_s, flops / gemm_s / 1e9, _runs(gemm)),
    ]
    report = "\n".join(
        [
            f"score benchmark: {getattr(model, 'kind', 'model')} {model_path or ''}, {users:,} users x {items:,} items, "
            f"dim {dim}, k {k}, block {block} users, "
            f"device {dev}, torch threads {torch.get_num_threads()}",
            f"machine: {host}",
            "",
            table(rows, ("what", "best s", "GFLOP/s", "all runs (s)")),
        ]
    )
    return emit(
        report,
        {
            "model": model_path or model.kind, "users": users, "items": items, "k": k, "seconds": round(seconds, 3),
            "gemm_bound_seconds": round(gemm_s, 3), "ratio_vs_gemm_bound": round(gemm_s / seconds, 3),
        },
    )
