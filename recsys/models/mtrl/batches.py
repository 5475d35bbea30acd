"""Interactions -> training tensors: per-user steps, then sliding windows of the last N steps.

A *step* is one item the user dealt with: consecutive events on the same item (view, click,
cart, purchase) merge into one step whose behaviour is the deepest funnel stage reached; a
rating of an item the user already has a step for attaches to that step (as a label, never
as an input), otherwise the rating is a step of its own (MovieLens is only ratings).

A window holds up to `max_len` input steps; position t predicts step t+1. Per position:
next item, next behaviour, reward, rating, `done` (the next step is the user's last) and
`boot` (the next state is inside the window, so a TD target can bootstrap from it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys import schema as S
from recsys.data.interactions import Interactions

N_TYPES = len(S.EVENT_TYPES)
RATING = S.EVENT_TYPES.index("rating")
CLICK, PURCHASE = S.EVENT_TYPES.index("click"), S.EVENT_TYPES.index("purchase")
GAP_UNKNOWN = 0  # first step of a user, or timestamps withheld (serving histories)


@dataclass
class Steps:
    """Collapsed steps of all users, grouped by user in time order; user u owns [starts[u], starts[u+1])."""

    item: np.ndarray  # (S,) int64
    btype: np.ndarray  # (S,) int64, index into schema.EVENT_TYPES
    ts: np.ndarray  # (S,) int64 µs
    rating: np.ndarray  # (S,) float32, NaN where none
    starts: np.ndarray  # (U+1,) int64


def collapse_sequence(
    items: np.ndarray, events: np.ndarray, ts: np.ndarray, ratings: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One user's time-ordered events -> (items, btype, ts, rating) of its steps."""
    items = np.asarray(items, np.int64)
    events = np.asarray(events, np.int64)
    ratings = np.full(len(items), np.nan, np.float32) if ratings is None else np.asarray(ratings, np.float32)
    out_i, out_b, out_t, out_r = [], [], [], []
    last_step: dict[int, int] = {}  # item -> index of its latest step
    for it, ev, t, r in zip(items.tolist(), events.tolist(), np.asarray(ts).tolist(), ratings.tolist()):
        if ev == RATING and it in last_step:  # a later rating labels the earlier step
            out_r[last_step[it]] = r
            continue
        if out_i and out_i[-1] == it and ev != RATING and out_b[-1] != RATING:
            out_b[-1] = max(out_b[-1], ev)  # same item again: deeper in the funnel
            continue
        last_step[it] = len(out_i)
        out_i.append(it)
        out_b.append(ev)
        out_t.append(t)
        out_r.append(r)
    return (
        np.array(out_i, np.int64), np.array(out_b, np.int64), np.array(out_t, np.int64),
        np.array(out_r, np.float32),
    )


def to_steps(data: Interactions) -> Steps:
    """All users' steps; users with no events get an empty range."""
    order = np.lexsort((data.event, data.ts, data.user))  # time order, funnel order on ties
    user = data.user[order]
    n_users = int(user.max()) + 1 if len(user) else 0
    bounds = np.searchsorted(user, np.arange(n_users + 1))
    parts = [[], [], [], []]
    starts = [0]
    for u in range(n_users):
        sl = order[bounds[u] : bounds[u + 1]]
        cols = collapse_sequence(data.item[sl], data.event[sl], data.ts[sl], data.rating[sl])
        for p, c in zip(parts, cols):
            p.append(c)
        starts.append(starts[-1] + len(cols[0]))
    cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
    return Steps(
        cat(parts[0], np.int64), cat(parts[1], np.int64), cat(parts[2], np.int64), cat(parts[3], np.float32),
        np.array(starts, np.int64),
    )


def gap_buckets(ts: np.ndarray, n_buckets: int) -> np.ndarray:
    """(L,) µs timestamps of one user -> (L,) buckets: 0 for the first, else 1 + floor(log2(1 + gap_s))."""
    gap_s = np.maximum(np.diff(ts, prepend=ts[:1]), 0) / 1e6 if len(ts) else np.zeros(0)
    b = 1 + np.minimum(np.floor(np.log2(1.0 + gap_s)), n_buckets - 2).astype(np.int64)
    if len(b):
        b[0] = GAP_UNKNOWN
    return b


def step_rewards(btype: np.ndarray, rating: np.ndarray, rewards, mid: float, scale: float) -> np.ndarray:
    """r = rewards[behaviour] + clip((rating - mid) / scale, -1, 1) where a rating exists."""
    r = np.asarray(rewards, np.float32)[btype]
    rated = ~np.isnan(rating)
    r[rated] += np.clip((rating[rated] - mid) / scale, -1.0, 1.0)
    return r.astype(np.float32)


@dataclass
class Windows:
    """Training windows, right-padded; a position with target < 0 trains nothing."""

    item: np.ndarray  # (W, T) int64 input items
    btype: np.ndarray  # (W, T) int64 input behaviours
    gap: np.ndarray  # (W, T) int64 input time-gap buckets
    length: np.ndarray  # (W,) int64 real positions
    target: np.ndarray  # (W, T) int64 next item, -1 where none
    t_type: np.ndarray  # (W, T) int64 next behaviour
    reward: np.ndarray  # (W, T) float32 reward of the next step
    rating: np.ndarray  # (W, T) float32 rating of the next step, NaN where none
    done: np.ndarray  # (W, T) bool: the next step is the user's last (terminal)
    boot: np.ndarray  # (W, T) bool: the next state is position t+1 of this window
    last_ts: np.ndarray  # (W,) int64 µs of the newest step the window predicts (a warm start's cut)

    def __len__(self) -> int:
        return len(self.length)


def make_windows(steps: Steps, max_len: int, stride: int, n_gap_buckets: int, rewards, mid: float, scale: float) -> Windows:
    """Per user, input positions 0..n-2 cut into windows ending at n-2, n-2-stride, ..."""
    reward = step_rewards(steps.btype, steps.rating, rewards, mid, scale)
    spans = []  # (user start, window lo, window hi) in user-local input positions [lo, hi)
    for u in range(len(steps.starts) - 1):
        s0, n = int(steps.starts[u]), int(steps.starts[u + 1] - steps.starts[u])
        hi = n - 1
        while hi > 0:
            spans.append((s0, n, max(0, hi - max_len), hi))
            hi -= stride
    W, T = len(spans), max_len
    out = {k: np.zeros((W, T), np.int64) for k in ("item", "btype", "gap")}
    target = np.full((W, T), -1, np.int64)
    t_type = np.zeros((W, T), np.int64)
    rew = np.zeros((W, T), np.float32)
    rat = np.full((W, T), np.nan, np.float32)
    done = np.zeros((W, T), bool)
    boot = np.zeros((W, T), bool)
    length = np.zeros(W, np.int64)
    last_ts = np.zeros(W, np.int64)
    gaps_of: dict[int, np.ndarray] = {}
    for w, (s0, n, lo, hi) in enumerate(spans):
        if s0 not in gaps_of:
            gaps_of = {s0: gap_buckets(steps.ts[s0 : s0 + n], n_gap_buckets)}
        L = hi - lo
        src, nxt = slice(s0 + lo, s0 + hi), slice(s0 + lo + 1, s0 + hi + 1)
        out["item"][w, :L] = steps.item[src]
        out["btype"][w, :L] = steps.btype[src]
        out["gap"][w, :L] = gaps_of[s0][lo:hi]
        target[w, :L] = steps.item[nxt]
        t_type[w, :L] = steps.btype[nxt]
        rew[w, :L] = reward[nxt]
        rat[w, :L] = steps.rating[nxt]
        pos = np.arange(lo, hi)
        done[w, :L] = pos + 1 == n - 1
        boot[w, :L] = (pos + 1 < hi) & ~done[w, :L]
        length[w] = L
        last_ts[w] = steps.ts[s0 + hi]
    return Windows(out["item"], out["btype"], out["gap"], length, target, t_type, rew, rat, done, boot, last_ts)


def encode_histories(
    histories: list[np.ndarray],
    events: list[np.ndarray] | None,
    ts: list[np.ndarray] | None,
    default_type: int,
    max_len: int,
    n_gap_buckets: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Serving histories -> (items, btype, gap) (B, T) right-padded, and lengths (B,).

    Without `events` every step gets `default_type`; without `ts` every gap is unknown.
    Consecutive repeats of an item collapse as in training; an empty history becomes one
    padding step (item 0, unknown behaviour), so the encoder still returns a state.
    """
    B = len(histories)
    items = np.zeros((B, max_len), np.int64)
    btype = np.full((B, max_len), default_type, np.int64)
    gap = np.zeros((B, max_len), np.int64)
    length = np.ones(B, np.int64)
    for b, h in enumerate(histories):
        h = np.asarray(h, np.int64)
        if events is None and ts is None:
            keep = np.ones(len(h), bool)
            keep[1:] = h[1:] != h[:-1]
            it, bt, tt = h[keep], np.full(keep.sum(), default_type), None
        else:
            ev = np.full(len(h), default_type) if events is None else np.asarray(events[b])
            t = np.arange(len(h), dtype=np.int64) if ts is None else np.asarray(ts[b])
            it, bt, tt, _ = collapse_sequence(h, ev, t)
        if not len(it):
            continue
        it, bt = it[-max_len:], bt[-max_len:]
        L = len(it)
        items[b, :L], btype[b, :L], length[b] = it, bt, L
        if ts is not None:
            gap[b, :L] = gap_buckets(tt, n_gap_buckets)[-L:]
    return items, btype, gap, length
