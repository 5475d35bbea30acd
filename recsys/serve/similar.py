"""Similar items: each item's top-K neighbours, written as Parquet for the publisher.

Where the neighbours come from, first that applies:
1. a model's own item vectors (cosine; the mtrl network's, memory or not), through the same
   ranking routine as users;
2. the co-occurrence model's item-item matrix (its `sim` rows, already bounded per item);
3. the item text vectors of the encode stage (cosine).
An item is never its own neighbour and unavailable items are never neighbours; unavailable
items still get a list (a page for an out-of-stock item can point elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from recsys import schema as S
from recsys.scoring import rank_users

SIMILAR_FILE = "similar_items.parquet"


@dataclass
class Neighbours:
    items: np.ndarray  # (N, K) int64 item_idx of the neighbours, best first
    scores: np.ndarray  # (N, K) float32; -inf past the end of a short list
    source: str  # "item vectors" | "co-occurrence" | "text vectors"


class _Cosine:
    """Items as their own 'users': user vector of [i] = unit vector of item i (a factorised model)."""

    def __init__(self, vectors: np.ndarray):
        v = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        self.vectors = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
        self.empty = norms[:, 0] == 0

    def user_vectors(self, histories: list[np.ndarray]) -> np.ndarray:
        return self.vectors[np.fromiter((h[0] for h in histories), dtype=np.int64, count=len(histories))]

    def item_vectors(self) -> np.ndarray:
        return self.vectors

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        return self.user_vectors(histories) @ self.vectors.T


def cosine_neighbours(
    vectors: np.ndarray, k: int, blocked: np.ndarray | None = None, block_items: int = 1024, device="cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine neighbours of every row of `vectors`, never itself nor a blocked or zero row."""
    model = _Cosine(vectors)
    n = len(model.vectors)
    never = model.empty.copy()
    if blocked is not None:
        never[: min(n, len(blocked))] |= np.asarray(blocked[:n], dtype=bool)
    ranking = rank_users(
        model, [np.array([i]) for i in range(n)], k, exclude=[np.array([i]) for i in range(n)],
        blocked=never, block_users=block_items, device=device,
    )
    ranking.scores[model.empty] = -np.inf  # no vector, no neighbours
    return ranking.items, ranking.scores


def sparse_neighbours(sim: sp.spmatrix, k: int, blocked: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k positive entries of each row of an item-item matrix, never the diagonal nor blocked columns."""
    m = sim.tocoo()
    keep = (m.row != m.col) & (m.data > 0) & np.isfinite(m.data)
    if blocked is not None:
        cols_ok = np.ones(m.shape[1], dtype=bool)
        n = min(m.shape[1], len(blocked))
        cols_ok[:n] = ~np.asarray(blocked[:n], dtype=bool)
        keep &= cols_ok[m.col]
    rows, cols, vals = m.row[keep].astype(np.int64), m.col[keep].astype(np.int64), m.data[keep].astype(np.float32)
    order = np.lexsort((cols, -vals, rows))  # by row, best first, ties by column
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, rows, side="left")
    position = np.arange(len(rows)) - starts
    top = position < k
    items = np.zeros((m.shape[0], k), dtype=np.int64)
    scores = np.full((m.shape[0], k), -np.inf, dtype=np.float32)
    items[rows[top], position[top]] = cols[top]
    scores[rows[top], position[top]] = vals[top]
    return items, scores


def similar_items(
    model, k: int, *, blocked: np.ndarray | None = None, text_vectors: np.ndarray | None = None,
    block_items: int = 1024, device="cpu",
) -> Neighbours | None:
    """Neighbour lists from the best source available (see the module docstring); None if none is."""
    if callable(getattr(model, "item_vectors", None)):  # a model's own item vectors, mixed scores or not
        items, scores = cosine_neighbours(model.item_vectors(), k, blocked, block_items, device)
        return Neighbours(items, scores, "item vectors")
    sim = getattr(model, "sim", None)
    if isinstance(sim, sp.spmatrix) and sim.shape[0] > 0:
        items, scores = sparse_neighbours(sim, k, blocked)
        return Neighbours(items, scores, "co-occurrence")
    if text_vectors is not None and len(text_vectors):
        items, scores = cosine_neighbours(text_vectors, k, blocked, block_items, device)
        return Neighbours(items, scores, "text vectors")
    return None


def lists_table(keys: np.ndarray, items: np.ndarray, scores: np.ndarray, item_ids: np.ndarray,
                key: str, item: str, extra: dict[str, np.ndarray] | None = None) -> pa.Table:
    """(key, rank, item, score, ...) rows of ranked lists, short lists cut, sorted by (key, rank)
    as the publisher streams them. `keys` (L,) str; `items`/`scores` (L, K); `extra` (L, K) columns."""
    valid = np.isfinite(scores)
    order = np.argsort(keys, kind="stable")
    valid = valid[order]
    rank = np.cumsum(valid, axis=1, dtype=np.int16)[valid]  # 1..n per list, whatever was cut
    columns = {
        key: pa.array(np.repeat(keys[order], valid.sum(axis=1)).astype(str)),
        "rank": pa.array(rank, pa.int16()),
        item: pa.array(item_ids[items[order][valid]].astype(str)),
        "score": pa.array(scores[order][valid], pa.float32()),
    }
    for name, values in (extra or {}).items():
        columns[name] = pa.array(values[order][valid], pa.string())
    return pa.table(columns)


def write_similar(out_dir: Path, neighbours: Neighbours, item_ids: np.ndarray, has_id: np.ndarray) -> dict:
    """Write the lists of catalogue items (`has_id`) to out_dir/similar_items.parquet."""
    n = min(len(neighbours.items), len(item_ids))
    sources = np.flatnonzero(has_id[:n])
    scores = neighbours.scores[sources]
    items = neighbours.items[sources]
    scores = np.where(has_id[np.clip(items, 0, len(has_id) - 1)] & (items < len(item_ids)), scores, -np.inf)
    table = lists_table(item_ids[sources], np.clip(items, 0, len(item_ids) - 1), scores, item_ids,
                        S.ITEM_ID, S.SIMILAR_ITEM_ID)
    path = Path(out_dir) / SIMILAR_FILE
    pq.write_table(table, path)
    return {
        "similar_path": str(path), "similar_rows": int(table.num_rows),
        "similar_items": int(len(np.unique(table.column(S.ITEM_ID).to_numpy(zero_copy_only=False)))),
        "similar_source": neighbours.source,
    }
