"""Top-K over the full catalogue in blocks of users: the one ranking routine for evaluation and serving.

Three ways to get a block's (B, I) scores, one way to rank them:

- fast path, for factorised models (see `Factorised`): item vectors are put on the device once,
  `user_vectors(histories)` is asked for VECTOR_USERS users at a time, and per block its (B, D)
  rows times the item matrix is one matmul on the device (CPU or CUDA), written into a reused
  buffer;
- a model whose score is more than a dot product may offer `block_scorer()`, a callable
  `(histories, events=None, out=None) -> (B, I) float32 tensor` that writes each block's
  scores into `out` (a buffer the ranker reuses, and then masks in place), and whose `width`
  (the catalogue it scores) sizes the blocks;
- fallback, for any other `Recommender`: `model.score(histories)` (B, I) in numpy.

Then, in torch on the device: unavailable items are out of the matrix (fast path) or masked,
each user's exclusions are masked with one scatter, `top_k_rows` takes the K best, and an
optional MMR re-rank diversifies by category. Memory is bounded by `block_users` x catalogue
scores at a time (`Settings.score_block_users`), fewer users where the catalogue is huge
(`BLOCK_BYTES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from recsys.device import resolve_device
from recsys.models.base import Recommender

# A block's (B, I) float32 scores stay under this many bytes whatever the catalogue: at a
# million items 1,024 users would be 4 GB, and a path holds two or three such matrices (scores,
# logits, the item memory's rows). Up to 131,072 items the configured block is kept.
BLOCK_BYTES = 512 << 20
# Fast path: user vectors are asked for this many users at a time, a whole number of score
# blocks. A model may pay a fixed cost per call (the mtrl item table, which passes every item's
# text through a projection: at a million items it dwarfs a 134-user block's own work).
VECTOR_USERS = 8192
# With MMR on, the re-rank picks K out of this many x K best-scored items per user.
MMR_POOL = 4
# Explanations look at the user's last items only, as the models do.
EXPLAIN_HISTORY = 20
# Top-K reads the maximum of each run of this many columns and ranks the columns of the K runs
# with the largest maxima only (`top_k_rows`): on the CPU, ranking whole rows costs about as
# much as the block's matmul, and reading maxima is one pass at memory speed.
TOP_RUN = 32


@runtime_checkable
class Factorised(Protocol):
    """Optional methods of a `Recommender` whose score is a dot product: score = U @ V.T.

    A model that offers both gets the fast path; biases fold into the vectors (a constant 1
    in the user vector, the bias in the item vector). `score` must equal
    `user_vectors(h) @ item_vectors().T`.
    """

    def user_vectors(self, histories: list[np.ndarray]) -> np.ndarray:
        """(B,) item_idx sequences -> (B, D) float32."""

    def item_vectors(self) -> np.ndarray:
        """(n_items, D) float32; row i is item_idx i."""


def reads_events(model) -> bool:
    """Whether the model's `score` and `user_vectors` take each history step's behaviour as
    `events=` (a sequence model trained on behaviours); others rank from the items alone."""
    return bool(getattr(model, "reads_events", False))


def is_factorised(model) -> bool:
    """Whether `score` is `user_vectors @ item_vectors.T`: a model may offer the vectors yet mix
    something else into its scores (the mtrl item memory), and says so with `factorised`."""
    return (
        bool(getattr(model, "factorised", True))
        and callable(getattr(model, "user_vectors", None))
        and callable(getattr(model, "item_vectors", None))
    )


@dataclass
class Ranking:
    """Per user: the K best items, their scores, and how many items could have been recommended."""

    items: np.ndarray  # (U, K) int64 item_idx, best first
    scores: np.ndarray  # (U, K) float32; -inf marks slots past the end of a short list
    candidates: np.ndarray  # (U,) int64: recommendable items (catalogue - unavailable - excluded)

    @property
    def lengths(self) -> np.ndarray:
        return np.isfinite(self.scores).sum(axis=1)

    def expected_rows(self) -> int:
        """Rows a complete batch has: users x K within the exclusions."""
        return int(np.minimum(self.candidates, self.items.shape[1]).sum())


class _Ranker:
    """The block loop: scores -> masks -> top-k (-> MMR), shared by both paths."""

    def __init__(self, model, k: int, blocked, block_users: int, device, diversity_lambda: float, category):
        self.model = model
        self.k = k
        self.block_users = max(1, int(block_users))
        self.device = resolve_device(device)
        self.lam = float(diversity_lambda)
        self.category = None if category is None or self.lam <= 0 else np.asarray(category, dtype=np.int64)
        self.blocked = None if blocked is None else np.asarray(blocked, dtype=bool)
        self.fast = is_factorised(model)
        make_scorer = None if self.fast else getattr(model, "block_scorer", None)
        self.scorer = make_scorer() if callable(make_scorer) else None
        self.buffer = None
        self.width = None  # scored columns (the model's catalogue)
        if self.fast:
            vectors = np.asarray(model.item_vectors(), dtype=np.float32)
            self.width = len(vectors)
            self.allowed = self._allowed(self.width)
            # Unavailable items leave the matrix: nothing to mask, less to multiply.
            self.columns = None if self.allowed.all() else np.flatnonzero(self.allowed)
            kept = vectors if self.columns is None else vectors[self.columns]
            # (D, I) contiguous on the device: the layout a GEMM streams best.
            self.item_t = torch.from_numpy(np.ascontiguousarray(kept.T)).to(self.device)

    def _allowed(self, width: int) -> np.ndarray:
        allowed = np.ones(width, dtype=bool)
        if self.blocked is not None:
            n = min(width, len(self.blocked))
            allowed[:n] = ~self.blocked[:n]
        return allowed

    def _user_vectors(self, histories: list[np.ndarray], events: list[np.ndarray] | None) -> torch.Tensor:
        """(B, D) float32 user vectors on the device (fast path)."""
        extra = {"events": events} if events is not None and reads_events(self.model) else {}
        users = np.ascontiguousarray(self.model.user_vectors(histories, **extra), dtype=np.float32)
        return torch.from_numpy(users).to(self.device)

    def _scores(self, histories: list[np.ndarray], events: list[np.ndarray] | None, users: torch.Tensor | None = None) -> torch.Tensor:
        """(B, W) float32 scores on the device; W = allowed items (fast path, from `users`, the
        block's user vectors) or the model's catalogue."""
        if self.fast:
            b, w = len(users), self.item_t.shape[1]
            if self.buffer is None or self.buffer.shape[0] < b:  # the first block is the largest
                self.buffer = torch.empty((b, w), dtype=torch.float32, device=self.device)
            out = self.buffer[:b]
            torch.matmul(users, self.item_t, out=out)
            return out
        extra = {"events": events} if events is not None and reads_events(self.model) else {}
        if self.scorer is not None:
            # Scored into one buffer that is then masked and ranked in place: no (B, I) copies.
            out = self.scorer(histories, out=self.buffer, **extra)
            self.buffer = out if self.buffer is None else self.buffer  # the first block is the largest
            out = out.to(self.device)
        else:
            scores = np.asarray(self.model.score(histories, **extra), dtype=np.float32)
            out = torch.from_numpy(np.array(scores, dtype=np.float32, copy=True)).to(self.device)
        if self.width is None:
            self.width = out.shape[1]
            self.allowed = self._allowed(self.width)
            self.columns = None
            masked = np.flatnonzero(~self.allowed)
            self.mask_cols = torch.from_numpy(masked).to(self.device) if len(masked) else None
        if self.mask_cols is not None:
            out.index_fill_(1, self.mask_cols, float("-inf"))
        return out

    def _exclusions(self, exclude: list[np.ndarray], n_cols: int) -> tuple[torch.Tensor | None, np.ndarray]:
        """Flat indices into the (B, n_cols) block of every (user, excluded item) still in it, and
        per user how many distinct recommendable items that removes."""
        b = len(exclude)
        lens = np.fromiter((len(e) for e in exclude), dtype=np.int64, count=b)
        removed = np.zeros(b, dtype=np.int64)
        if lens.sum() == 0:
            return None, removed
        rows = np.repeat(np.arange(b, dtype=np.int64), lens)
        cols = np.concatenate(exclude).astype(np.int64, copy=False)
        keep = (cols >= 0) & (cols < self.width)
        rows, cols = rows[keep], cols[keep]
        if self.columns is not None:  # fast path: items -> columns of the reduced matrix
            where = np.full(self.width, -1, dtype=np.int64)
            where[self.columns] = np.arange(len(self.columns))
            cols = where[cols]
        elif not self.fast and self.mask_cols is not None:  # fallback: blocked columns are masked already
            cols = np.where(self.allowed[cols], cols, -1)
        keep = cols >= 0
        flat = np.unique(rows[keep] * n_cols + cols[keep])
        removed = np.bincount(flat // n_cols, minlength=b)
        return torch.from_numpy(flat).to(self.device), removed

    def _block(self) -> int:
        """Users per block: `block_users`, fewer where a block of the catalogue's scores would pass
        BLOCK_BYTES."""
        width = self.width or getattr(self.scorer, "width", None) or model_width(self.model)
        return max(1, min(self.block_users, BLOCK_BYTES // (4 * max(int(width), 1))))

    def rank(self, histories: list[np.ndarray], exclude: list[np.ndarray] | None, events: list[np.ndarray] | None = None) -> Ranking:
        n, k = len(histories), self.k
        items = np.zeros((n, k), dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        candidates = np.zeros(n, dtype=np.int64)
        block = self._block()
        chunk = block * max(1, VECTOR_USERS // block)
        vectors, v_lo = None, 0
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            if self.fast and lo % chunk == 0:
                v_lo, v_hi = lo, min(lo + chunk, n)
                vectors = self._user_vectors(histories[v_lo:v_hi], None if events is None else events[v_lo:v_hi])
            users = vectors[lo - v_lo : hi - v_lo] if self.fast else None
            s = self._scores(histories[lo:hi], None if events is None else events[lo:hi], users)
            b, w = s.shape
            allowed = w if self.fast else int(self.allowed.sum())
            flat, removed = (None, np.zeros(b, np.int64)) if exclude is None else self._exclusions(exclude[lo:hi], w)
            if flat is not None:
                s.view(-1).index_fill_(0, flat, float("-inf"))
            candidates[lo:hi] = allowed - removed
            kk = min(k, w)
            if kk == 0:
                continue
            pool = min(w, k * MMR_POOL) if self.category is not None else kk
            vals, idx = top_k_rows(s, pool)
            # NaN sorts above everything in topk and +inf is no score: only then sanitise the
            # whole block (a full pass) and take the top again. Finite blocks never pay for it.
            # (Checked in numpy: on a busy CPU each small torch op pays a thread-pool wake-up.)
            top = vals.cpu().numpy()
            if np.isnan(top).any() or np.isposinf(top).any():
                s.nan_to_num_(nan=float("-inf"), posinf=float("-inf"), neginf=float("-inf"))
                vals, idx = top_k_rows(s, pool)
                top = vals.cpu().numpy()
            if self.category is not None:
                vals, idx = self._mmr(vals, idx, kk)
                top = vals.cpu().numpy()
            idx = idx.cpu().numpy()
            items[lo:hi, :kk] = idx if self.columns is None else self.columns[idx]
            scores[lo:hi, :kk] = top
        return Ranking(items, scores, candidates)

    def _mmr(self, vals: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy maximal marginal relevance over each user's pool, by category.

        Step t picks argmax over the pool of (1 - lambda) * relevance - lambda * [category already
        picked]; relevance is the score min-max scaled within the user's pool. Scores are kept.
        """
        b, pool = vals.shape
        item_idx = idx if self.columns is None else torch.from_numpy(self.columns).to(idx.device)[idx]
        cat = torch.from_numpy(self.category).to(idx.device)
        n_cat = int(self.category.max(initial=-1)) + 2  # last code: no category, never penalised
        codes = cat[item_idx.clamp(max=len(cat) - 1)]
        codes = torch.where((item_idx < len(cat)) & (codes >= 0), codes, torch.full_like(codes, n_cat - 1))
        valid = torch.isfinite(vals)
        low = torch.where(valid, vals, torch.full_like(vals, float("inf"))).amin(dim=1, keepdim=True)
        high = torch.where(valid, vals, torch.full_like(vals, float("-inf"))).amax(dim=1, keepdim=True)
        rel = torch.where(valid, (vals - low) / (high - low).clamp(min=1e-12), torch.zeros_like(vals))
        seen = torch.zeros((b, n_cat), dtype=torch.bool, device=vals.device)
        open_ = valid.clone()
        rows = torch.arange(b, device=vals.device)
        out_vals = torch.full((b, k), float("-inf"), device=vals.device)
        out_idx = torch.zeros((b, k), dtype=idx.dtype, device=vals.device)
        for t in range(k):
            penalty = seen.gather(1, codes).float()
            gain = (1 - self.lam) * rel - self.lam * penalty
            gain = torch.where(open_, gain, torch.full_like(gain, float("-inf")))
            best = gain.argmax(dim=1)
            ok = open_[rows, best]
            out_vals[:, t] = torch.where(ok, vals[rows, best], torch.full_like(vals[:, 0], float("-inf")))
            out_idx[:, t] = idx[rows, best]
            open_[rows, best] = False
            seen[rows, codes[rows, best]] = True
            seen[:, n_cat - 1] = False
        return out_vals, out_idx


def top_k_rows(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk(s, k, dim=1) for a (B, W) block: the same values in the same order, and the
    same columns up to the order of exactly tied values.

    Exact: a column among a row's k best holds at least the k-th best value v, so its run's
    maximum is at least v; at most k - 1 runs have a maximum above v (each such maximum is
    one of the k - 1 values above it), so the k runs with the largest maxima hold every value
    above v and as many equal to v as a top k needs. NaN and +inf are maxima too, so they reach
    the result as torch.topk would give them.
    """
    b, w = s.shape
    runs = w // TOP_RUN
    if runs < 4 * k:  # too few runs to skip much of the row
        return torch.topk(s, k, dim=1)
    body = runs * TOP_RUN
    maxima = s[:, :body].view(b, runs, TOP_RUN).amax(dim=2)
    picked = torch.topk(maxima, k, dim=1, sorted=False).indices
    cols = (picked.unsqueeze(2) * TOP_RUN + torch.arange(TOP_RUN, device=s.device)).view(b, -1)
    if body < w:  # the last, partial run is always a candidate
        cols = torch.cat([cols, torch.arange(body, w, device=s.device).expand(b, -1)], dim=1)
    vals, at = torch.topk(torch.gather(s, 1, cols), k, dim=1)
    return vals, torch.gather(cols, 1, at)


def model_width(model) -> int:
    """Items the model scores (its catalogue as of training)."""
    if is_factorised(model):
        return len(model.item_vectors())
    # A one-item history: every model can score it (some cannot score an empty one).
    return int(np.asarray(model.score([np.zeros(1, dtype=np.int32)])).shape[1])


def rank_users(
    model: Recommender,
    histories: list[np.ndarray],
    k: int,
    *,
    exclude: list[np.ndarray] | None = None,
    blocked: np.ndarray | None = None,
    block_users: int = 1024,
    device: str | torch.device = "cpu",
    diversity_lambda: float = 0.0,
    category: np.ndarray | None = None,
    events: list[np.ndarray] | None = None,
) -> Ranking:
    """Rank every recommendable item for each history; see the module docstring.

    `exclude[u]`: item ids never recommended to user u (already bought or seen); `blocked`:
    boolean (n_items,) mask of items never recommended to anyone (unavailable); `category`:
    (n_items,) int codes (-1 = none) for the MMR re-rank, used when `diversity_lambda` > 0;
    `events[u]`: the behaviour of each step of histories[u], for models that read it.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ranker = _Ranker(model, k, blocked, block_users, device, diversity_lambda, category)
    with torch.inference_mode():
        return ranker.rank(histories, exclude, events)


def top_k(
    model: Recommender,
    histories: list[np.ndarray],
    k: int,
    exclude: list[np.ndarray] | None = None,
    blocked: np.ndarray | None = None,
    block_users: int = 1024,
    device: str | torch.device = "cpu",
    events: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(items (U, K) int64, scores (U, K) float32) of `rank_users`; -inf scores mark short lists."""
    ranking = rank_users(
        model, histories, k, exclude=exclude, blocked=blocked, block_users=block_users, device=device, events=events
    )
    return ranking.items, ranking.scores


def explain_factorised(model, histories: list[np.ndarray], items: np.ndarray, block_users: int = 1024) -> np.ndarray:
    """(U, K) item_idx of the history item most similar (dot product of item vectors) to each
    recommended item: what drove it for a model whose user vector sums its history; -1 when the
    user has no history item the model knows."""
    return explain_by_vectors(model.item_vectors(), histories, items, block_users)


def explain_by_vectors(vectors: np.ndarray, histories: list[np.ndarray], items: np.ndarray, block_users: int = 1024) -> np.ndarray:
    """As explain_factorised, for any (n_items, D) item vectors (e.g. unit vectors: cosine)."""
    vectors = torch.from_numpy(np.asarray(vectors, dtype=np.float32))
    n_items = len(vectors)
    out = np.full(items.shape, -1, dtype=np.int64)
    for lo in range(0, len(histories), block_users):
        block = histories[lo : lo + block_users]
        tails = [np.asarray(h[-EXPLAIN_HISTORY:], dtype=np.int64) for h in block]
        tails = [t[(t >= 0) & (t < n_items)] for t in tails]
        width = max((len(t) for t in tails), default=0)
        if width == 0:
            continue
        hist = np.zeros((len(block), width), dtype=np.int64)
        mask = np.zeros((len(block), width), dtype=bool)
        for r, t in enumerate(tails):
            hist[r, : len(t)] = t
            mask[r, : len(t)] = True
        recs = np.clip(items[lo : lo + len(block)], 0, n_items - 1)
        with torch.inference_mode():
            history_vectors = vectors[torch.from_numpy(hist)]  # (B, H, D)
            sim = torch.bmm(history_vectors, vectors[torch.from_numpy(recs)].transpose(1, 2))  # (B, H, K)
            sim[~torch.from_numpy(mask)] = float("-inf")
            best = sim.argmax(dim=1).numpy()  # (B, K)
        chosen = np.take_along_axis(hist, best, axis=1)
        chosen[~mask.any(axis=1)] = -1
        out[lo : lo + len(block)] = chosen
    return out
