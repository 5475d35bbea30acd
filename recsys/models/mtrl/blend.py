"""The served score: what every head learned, weighted by what the business rewards.

    score(a | s) = log_softmax(h E^T)_a                 ranking head: P(next item = a)
                 + w_memory  m(a | history)             item memory (memory.py)
                 + w_q       z_s(A(s, a))               Q head's advantage, z-scored per user
                 + w_buy     log pCTCVR(s, a)           behaviour heads: P(click and buy | a shown)
                 + w_pop[n]  log p_pop(a)               popularity prior, by history length n

Each term is a log-probability or a standardised value, so the sum is a product of experts
(Hinton 2002) with one exponent per expert. The ranking head says what the user will touch
next; the Q head what leads to reward over the next few steps (SQN, Xin et al. 2020); the
behaviour heads how likely a shown item is to be bought (ESMM, Ma et al. 2018); the prior
what everyone touches, which is most of what a user with one or two interactions tells us.
`combine` is the definition; serving computes it less a per-user constant, which leaves each
user's list as it is, in one matmul per block of users (served.py).

The weights are chosen on the validation cases, never on test, by expected reward: NDCG@10
whose gain per target is the reward of the deepest behaviour it reached (`rewards`, purchase
counting most), at least `gain_floor`, so that an item only viewed still counts a little.
The choice is coordinate ascent over small grids, and the prior's weight is chosen per
history-length bucket on that bucket's users (joined by the next longer buckets' users while
there are fewer than MIN_BUCKET_USERS). Each step keeps the smallest weight whose objective is
within one paired standard error of the best one's (the one-standard-error rule of Breiman et
al. 1984): a validation window holds few buyers, and a larger weight that wins by less than that
noise chose the window, not the users (on the 6,000-user synthetic log the unruled choice served
purchases worse than the ranking head and memory alone).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from recsys.evaluate.metrics import paired_difference
from recsys.evaluate.protocol import EvalCases
from recsys.models.mtrl.inference import encoded_blocks
from recsys.models.mtrl.model import MTRLNet

log = logging.getLogger(__name__)

# Upper edges (inclusive) of the history-length buckets the prior's weight is chosen per;
# the last bucket is open. Short histories are where a prior helps (the 1-2, 3-5).
PRIOR_BUCKETS = (2, 5, 10)
GRIDS = {
    "memory": (0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0),
    "q": (0.0, 0.25, 0.5, 1.0, 2.0),
    "buy": (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
    # Up to 8: for one or two interactions the prior may have to outvote the network outright.
    "pop": (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
}
# A bucket with fewer validation users than this borrows the users of the next longer buckets
# for its choice (its weight still applies to it alone): two or three users choose noise.
MIN_BUCKET_USERS = 50
# Passes of coordinate ascent: the second lets the memory weight settle after the others moved.
PASSES = 2
# Bytes of (users x items) float32 parts held for the choice: above it, fewer validation users.
CHOICE_BYTES = 1 << 30


@dataclass
class Blend:
    memory: float = 0.0
    q: float = 0.0
    buy: float = 0.0
    pop: tuple[float, ...] = (0.0,) * (len(PRIOR_BUCKETS) + 1)
    chosen_on: dict = field(default_factory=dict)  # objective per candidate, for the record

    @property
    def network_only(self) -> bool:
        """Whether the score is the ranking head's alone (the factorised fast path applies)."""
        return self.memory <= 0 and self.q <= 0 and self.buy <= 0 and not any(w > 0 for w in self.pop)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["pop"] = list(self.pop)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Blend":
        d = dict(d)
        d["pop"] = tuple(d.get("pop", ()) or cls().pop)
        return cls(**d)


def bucket_of(lengths: np.ndarray) -> np.ndarray:
    """History lengths (B,) -> bucket index (B,) into PRIOR_BUCKETS (last = longer)."""
    return np.searchsorted(np.asarray(PRIOR_BUCKETS), np.asarray(lengths), side="left")


def q_part(heads: dict[str, torch.Tensor], table_t: torch.Tensor) -> torch.Tensor:
    """(b, I) the Q head's advantages A(s, a), standardised per user: Q is only known up to the
    per-user V(s), and its scale is set against the ranking head's log-probabilities."""
    adv = heads["q"] @ table_t
    return (adv - adv.mean(1, keepdim=True)) / adv.std(1, keepdim=True).clamp(min=1e-6)


def buy_part(heads: dict[str, torch.Tensor], table_t: torch.Tensor) -> torch.Tensor:
    """(b, I) log pCTCVR = log pCTR + log pCVR of the behaviour heads (ESMM)."""
    return F.logsigmoid(heads["ctr"] @ table_t) + F.logsigmoid(heads["cvr"] @ table_t)


@torch.no_grad()
def network_parts(
    net: MTRLNet, histories: list[np.ndarray], default_type: int, events=None, ts=None, block: int = 512,
    skip: frozenset[str] = frozenset(),
) -> dict[str, np.ndarray]:
    """(B,) item_idx histories (with each step's behaviour and µs time when known) ->
    {name: (B, I) float32}: `rank` always, `q` with a Q head, `buy` with behaviour heads, less
    the names in `skip` (serving skips the terms its blend weighs 0: each is a (B, I) pass)."""
    was_training = net.training
    net.eval()
    table = net.item_table()  # (I, D)
    out: dict[str, list[np.ndarray]] = {}
    unused = frozenset(("ctr",) if "buy" in skip else ()) | (skip & {"q"})
    for _, items, btype, gap, length in encoded_blocks(net, histories, events, ts, default_type, block):
        heads = net.last_states(items, btype, gap, length, table, unused)
        parts = {"rank": torch.log_softmax(heads["rank"] @ table.T, dim=1)}  # (b, I)
        if "q" in heads and "q" not in skip:
            parts["q"] = q_part(heads, table.T)
        if "ctr" in heads and "buy" not in skip:
            parts["buy"] = buy_part(heads, table.T)
        for k, v in parts.items():
            out.setdefault(k, []).append(v.float().cpu().numpy())
    net.train(was_training)
    width = net.n_items
    return {k: np.concatenate(v) if v else np.zeros((0, width), np.float32) for k, v in out.items()}


def prior_over(pop_log: np.ndarray, width: int) -> np.ndarray:
    """log p_pop (I,) -> (width,): items newer than the prior are as rare as its rarest."""
    if len(pop_log) < width:
        pop_log = np.pad(pop_log, (0, width - len(pop_log)), constant_values=pop_log.min(initial=0.0))
    return pop_log[:width]


def combine(parts: dict[str, np.ndarray], blend: Blend, lengths: np.ndarray, memory_log=None, pop_log=None) -> np.ndarray:
    """The served score (B, I) from the parts (network_parts), the memory's and the prior's logs."""
    s = parts["rank"].copy()
    for name, w in (("q", blend.q), ("buy", blend.buy)):
        if w > 0 and name in parts:
            s += w * parts[name]
    if blend.memory > 0 and memory_log is not None:
        s += blend.memory * memory_log
    if pop_log is not None and any(w > 0 for w in blend.pop):
        w = np.asarray(blend.pop, np.float32)[bucket_of(lengths)]  # (B,)
        if pop_log.ndim == 1:  # one row for the catalogue (else per row: ServedTopK's candidates)
            pop_log = prior_over(pop_log, s.shape[1])[None, :]
        s += w[:, None] * pop_log
    return s


def target_gains(cases: EvalCases, rewards, gain_floor: float) -> list[np.ndarray]:
    """Per case, the gain of each target: reward of its deepest behaviour, at least gain_floor."""
    r = np.maximum(np.asarray(rewards, np.float64), gain_floor)
    events = cases.target_events or [np.zeros(len(t), np.int64) for t in cases.targets]
    return [r[np.asarray(e, np.int64)] for e in events]


def reward_ndcg(top: np.ndarray, targets: list[np.ndarray], gains: list[np.ndarray]) -> np.ndarray:
    """(U, K) ranked items -> (U,) gain-weighted NDCG@K: sum_r g(item_r) / log2(r + 2) over the
    ideal order of the user's gains. Range [0, 1]; with equal gains it is plain NDCG@K."""
    return RewardNDCG(targets, gains, top.shape[1])(top)


class RewardNDCG:
    """reward_ndcg for many rankings of the same cases: the targets' lookup and each user's
    ideal DCG are built once (the blend's choice ranks the same users some 80 times)."""

    def __init__(self, targets: list[np.ndarray], gains: list[np.ndarray], k: int):
        self.disc = 1.0 / np.log2(np.arange(2, k + 2))
        counts = np.array([len(t) for t in targets], np.int64)
        user = np.repeat(np.arange(len(targets), dtype=np.int64), counts)
        item = np.concatenate([np.asarray(t, np.int64) for t in targets] + [np.zeros(0, np.int64)])
        gain = np.concatenate([np.asarray(g, np.float64) for g in gains] + [np.zeros(0)])
        self.width = int(item.max(initial=0)) + 1
        keys = user * self.width + item
        order = np.argsort(keys, kind="stable")
        last = np.r_[keys[order][1:] != keys[order][:-1], True]  # a repeated target: its last gain
        # a sentinel above every key: every lookup lands on an entry
        self.keys = np.r_[keys[order][last], np.iinfo(np.int64).max]
        self.gain = np.r_[gain[order][last], 0.0]
        padded = np.zeros((len(targets), max(int(counts.max(initial=0)), k)))
        padded[user, np.arange(len(user)) - np.repeat(np.cumsum(counts) - counts, counts)] = gain
        self.ideal = -np.sort(-padded, axis=1)[:, :k] @ self.disc  # (U,)

    def __call__(self, top: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """(n,) NDCG of each ranking; row i of `top` is user rows[i] (default: user i)."""
        top = np.asarray(top, np.int64)
        n, k = top.shape
        users = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        keys = np.where(top < self.width, users[:, None] * self.width + top, -1)
        at = np.searchsorted(self.keys, keys)
        dcg = np.where(self.keys[at] == keys, self.gain[at], 0.0) @ self.disc[:k]
        ideal = self.ideal[users]
        return np.divide(dcg, ideal, out=np.zeros(n), where=ideal > 0)


def choose_blend(
    parts: dict[str, np.ndarray],
    cases: EvalCases,
    gains: list[np.ndarray],
    memory_log: np.ndarray | None,
    pop_log: np.ndarray | None,
    k: int = 10,
    memory: float | None = None,
) -> Blend:
    """Coordinate ascent over GRIDS on the cases' gain-weighted NDCG@k (see module docstring).

    `parts`, `memory_log` (B, I) are for exactly `cases`' histories; `pop_log` (I,) or None;
    `memory`: a configured memory weight, kept while the other weights are chosen beside it.
    """
    lengths = np.array([len(h) for h in cases.histories])
    buckets = bucket_of(lengths)
    ranked = ServedTopK(parts, memory_log, pop_log, seen_mask(cases, parts["rank"].shape[1]), lengths, k)
    score = RewardNDCG(cases.targets, gains, k)
    choice_rows = [np.flatnonzero(_choice_users(buckets, b)) for b in range(len(PRIOR_BUCKETS) + 1)]
    done: dict[tuple, np.ndarray] = {}  # a blend the second pass meets again is not ranked twice

    def per_user(b: Blend, bucket: int | None = None) -> np.ndarray:
        """(U,) objective per user, or per user of `bucket`'s choice (choice_rows)."""
        key = (b.memory, b.q, b.buy, tuple(b.pop), bucket)
        if key not in done:
            rows = None if bucket is None else choice_rows[bucket]
            done[key] = score(ranked(b, rows), rows)
        return done[key]

    blend = Blend(memory=memory or 0.0)
    axes = [a for a in ("memory", "q", "buy") if (a in parts) or (a == "memory" and memory_log is not None and memory is None)]
    record: dict[str, dict] = {}
    for _ in range(PASSES):
        for axis in axes:
            users = {w: per_user(_with(blend, axis, w)) for w in GRIDS[axis]}
            blend = _with(blend, axis, one_se_choice(users))
            record[axis] = {f"{w:g}": round(float(v.mean()), 5) for w, v in users.items()}
        if pop_log is not None:
            pop = list(blend.pop)
            for b in range(len(pop)):
                if not (buckets == b).any():
                    continue
                users = {}
                for w in GRIDS["pop"]:
                    pop[b] = w
                    users[w] = per_user(_with(blend, "pop", tuple(pop)), b)
                pop[b] = one_se_choice(users)
                record[f"pop[{b}]"] = {f"{w:g}": round(float(v.mean()), 5) for w, v in users.items()} | {"users": len(choice_rows[b])}
            blend = _with(blend, "pop", tuple(pop))
    blend.chosen_on = {"objective": f"reward-weighted ndcg@{k} on {len(cases.histories)} validation users",
                       "final": round(float(per_user(blend).mean()), 5), "grids": record}  # fmt: skip
    return blend


# Candidates per user and term: the served top-k is looked for among each term's SHORTLIST best
# items (and the prior's), and proven there by a bound (ServedTopK).
SHORTLIST = 100


class ServedTopK:
    """The served top-k (B, k) of any blend, as top_of(combine(...)) ranks it, without a pass
    over the whole catalogue for every blend the choice tries.

    Each user's candidates are the SHORTLIST best unseen items of every term (ranking head, Q,
    pCTCVR, memory) and the prior's SHORTLIST most popular. An item outside them scores at most
    the sum of the weighted SHORTLIST-th values of the terms (Fagin's threshold algorithm), so
    where the k-th candidate scores above that bound the candidates' top k is the catalogue's;
    the other users are ranked over the whole catalogue. Candidates' scores are combine's, the
    same float32 operations in the same order. Weights are never negative (GRIDS).
    """

    def __init__(self, parts: dict[str, np.ndarray], memory_log, pop_log, seen: np.ndarray, lengths: np.ndarray, k: int):
        self.parts, self.memory_log, self.seen, self.lengths, self.k = parts, memory_log, seen, lengths, k
        n, width = parts["rank"].shape
        if pop_log is not None and len(pop_log) < width:  # items newer than the prior: as rare as its rarest
            pop_log = np.pad(pop_log, (0, width - len(pop_log)), constant_values=pop_log.min(initial=0.0))
        self.pop_log = None if pop_log is None else pop_log[:width]
        terms = {name: parts[name] for name in ("rank", "q", "buy") if name in parts}
        if memory_log is not None:
            terms["memory"] = memory_log
        m = SHORTLIST
        self.exact = m * (len(terms) + 1) >= width or n == 0
        if self.exact:
            return
        cands, self.tau = [], {}
        for name, term in terms.items():
            masked = np.where(seen, -np.inf, term)
            top = np.argpartition(-masked, m - 1, axis=1)[:, :m]
            cands.append(top)
            self.tau[name] = np.take_along_axis(masked, top, 1).min(1).astype(np.float64)  # (B,) the m-th best
        if self.pop_log is not None:
            top = np.argpartition(-self.pop_log, m - 1)[:m]
            cands.append(np.broadcast_to(top, (n, m)))
            self.tau["pop"] = float(self.pop_log[top].min())
        cand = np.sort(np.concatenate(cands, axis=1), axis=1)
        self.blocked = np.take_along_axis(seen, cand, 1)
        self.blocked[:, 1:] |= cand[:, 1:] == cand[:, :-1]  # an item twice among the candidates counts once
        self.cand = cand
        self.gathered = {name: np.take_along_axis(term, cand, 1) for name, term in terms.items()}

    def __call__(self, blend: Blend, rows: np.ndarray | None = None) -> np.ndarray:
        """(B, k) items ranked best first, or (len(rows), k) for the users `rows` only."""
        rows = np.arange(len(self.lengths)) if rows is None else rows
        if self.exact:
            return self._whole(blend, rows)
        g = self.gathered
        parts = {name: g[name][rows] for name in ("rank", "q", "buy") if name in g}
        pop = None if self.pop_log is None else self.pop_log[self.cand[rows]]
        s = combine(parts, blend, self.lengths[rows], g["memory"][rows] if "memory" in g else None, pop)
        pos = top_of(s, self.blocked[rows], self.k)  # columns of the candidates, best first
        kth = np.take_along_axis(s, pos[:, -1:], 1)[:, 0]
        top = np.take_along_axis(self.cand[rows], pos, 1)
        bound = self._bound(blend, rows)
        # float32 sums of an outside item may round above the exact bound: a margin covers it
        unproven = np.flatnonzero(~(kth > bound + 1e-4 * (1.0 + np.abs(bound))))
        if len(unproven):
            top[unproven] = self._whole(blend, rows[unproven])
        return top

    def _whole(self, blend: Blend, rows: np.ndarray) -> np.ndarray:
        """The top k of `rows` ranking the whole catalogue."""
        memory_log = None if self.memory_log is None else self.memory_log[rows]
        full = combine({name: p[rows] for name, p in self.parts.items()}, blend, self.lengths[rows], memory_log, self.pop_log)
        return top_of(full, self.seen[rows], self.k)

    def _bound(self, blend: Blend, rows: np.ndarray) -> np.ndarray:
        """(len(rows),) the most any item outside a user's candidates can score under `blend`."""
        tau = self.tau
        bound = tau["rank"][rows]
        for name, w in (("q", blend.q), ("buy", blend.buy), ("memory", blend.memory)):
            if w > 0 and name in tau:
                bound = bound + w * tau[name][rows]
        if "pop" in tau and any(w > 0 for w in blend.pop):
            bound = bound + np.asarray(blend.pop, np.float64)[bucket_of(self.lengths[rows])] * tau["pop"]
        return bound


def seen_mask(cases: EvalCases, width: int) -> np.ndarray:
    """(B, width) bool: the items each case's history holds, which are never recommended."""
    seen = np.zeros((len(cases.histories), width), dtype=bool)
    for u, e in enumerate(cases.exclude):
        seen[u, e[e < width]] = True
    return seen


def top_of(scores: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """(B, I) scores -> (B, k) items ranked best first, `seen` excluded (scores overwritten)."""
    scores[seen] = -np.inf
    top = np.argpartition(-scores, k, axis=1)[:, :k] if scores.shape[1] > k else np.argsort(-scores, axis=1)
    order = np.take_along_axis(scores, top, 1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, 1)


def one_se_choice(per_user: dict[float, np.ndarray]) -> float:
    """The smallest weight whose mean objective is within one paired standard error of the
    best weight's (ties of the best go to the smaller weight too). `per_user`: weight -> (U,)
    objective per validation user, the same users for every weight."""
    means = {w: float(v.mean()) for w, v in per_user.items()}
    best = max(means, key=lambda w: (round(means[w], 10), -w))
    for w in sorted(per_user):
        if w >= best:
            break
        _, se = paired_difference(per_user[best], per_user[w])
        if means[best] - means[w] <= se:
            return w
    return best


def _choice_users(buckets: np.ndarray, b: int) -> np.ndarray:
    """Users whose bucket is b, joined by those of the next longer buckets until MIN_BUCKET_USERS."""
    hi = b
    while (buckets >= b).sum() > 0 and ((buckets >= b) & (buckets <= hi)).sum() < MIN_BUCKET_USERS and hi < buckets.max():
        hi += 1
    return (buckets >= b) & (buckets <= hi)


def _with(blend: Blend, axis: str, value) -> Blend:
    return replace(blend, **{axis: value}, chosen_on={})


def choice_users(n_cases: int, n_items: int, n_parts: int) -> int:
    """How many validation users the choice can hold in CHOICE_BYTES."""
    return max(1, min(n_cases, CHOICE_BYTES // max(4 * n_items * max(n_parts, 1), 1)))


def popularity_log(counts: np.ndarray) -> np.ndarray:
    """Distinct-user counts (I,) -> log p_pop (I,), add-one smoothed so no item is impossible."""
    p = (np.asarray(counts, np.float64) + 1.0) / (float(np.sum(counts)) + len(counts))
    return np.log(p).astype(np.float32)

