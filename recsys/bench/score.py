"""`recsys bench score`: the ranking routine vs one bare matrix multiply of the same shapes, same run.

The model is factorised and random (user and item vectors of dimension 64), so the routine takes
its fast path: per block of users, the matmul into a reused buffer, each user's exclusions
masked (their 10 history items), top-K, results back to numpy. The bound is
`torch.matmul(users, items.T)` as one call producing the whole (U, I) score matrix, with the
user vectors computed beforehand: no masking, no ranking. Both run `repeats` times, interleaved;
the best of each counts.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys.bench.common import emit, machine, table, timed

DIM = 64
HISTORY = 10


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


def run(users: int = 20_000, items: int = 20_000, k: int = 50, repeats: int = 3, block_users: int | None = None,
        device: str = "cpu") -> dict:
    from recsys.config import Settings
    from recsys.device import resolve_device
    from recsys.scoring import rank_users

    host = machine()  # before the run loads the machine itself
    block = block_users or Settings.model_fields["score_block_users"].default
    dev = resolve_device(device)
    model = RandomFactorised(items)
    rng = np.random.default_rng(1)
    histories = list(rng.integers(0, items, (users, HISTORY)))
    exclude = [np.unique(h) for h in histories]
    user_t = torch.from_numpy(model.user_vectors(histories)).to(dev)
    item_t = torch.from_numpy(model.vectors).to(dev)

    def ours():
        ranking = rank_users(model, histories, k, exclude=exclude, block_users=block, device=dev)
        return ranking

    def bare():
        with torch.inference_mode():
            out = torch.matmul(user_t, item_t.T)
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
            seconds, out = timed(fn)
            (routine if name == "routine" else gemm).append(seconds)
            if name == "routine":
                result = out
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    assert result is not None and result.items.shape == (users, k)
    assert not any(np.isin(result.items[u], exclude[u]).any() for u in range(min(users, 1000)))
    seconds, gemm_s = min(routine), min(gemm)
    flops = 2.0 * users * items * DIM
    rows = [
        ("ranking routine (matmul + masks + top-k)", seconds, flops / seconds / 1e9, _runs(routine)),
        ("bare torch.matmul (U, I) in one call", gemm_s, flops / gemm_s / 1e9, _runs(gemm)),
    ]
    report = "\n".join(
        [
            f"score benchmark: {users:,} users x {items:,} items, dim {DIM}, k {k}, block {block} users, "
            f"device {dev}, torch threads {torch.get_num_threads()}",
            f"machine: {host}",
            "",
            table(rows, ("what", "best s", "GFLOP/s", "all runs (s)")),
        ]
    )
    return emit(
        report,
        {
            "users": users, "items": items, "k": k, "seconds": round(seconds, 3),
            "gemm_bound_seconds": round(gemm_s, 3), "ratio_vs_gemm_bound": round(gemm_s / seconds, 3),
        },
    )
