"""ServedScorer: a trained MTRLModel's served score for blocks of histories, one matmul a block.

blend.combine sums (B, I) matrices: the ranking head's log-softmax, w_q times the Q head's
advantage standardised per user, w_buy times log pCTCVR, w_memory times the memory's log and
w_pop[n] times the prior's log. A user's ranking needs that sum only up to a constant per
user, and up to such a constant every term but pCTCVR is a per-user vector times a per-item
vector:

- log_softmax(h E^T) = h E^T - logsumexp(h E^T), the normaliser one number per user;
- w_q (A - mean A) / std A with A = q E^T is (w_q / std A) q E^T less a per-user number, and
  std A^2 = q^T C q with C the item table's covariance over the catalogue (computed once);
- the memory's log is w log EPS on a known item it gives no mass and w typical(h) on an item
  it never saw, [w log EPS, w typical(h)] . [known, unknown], plus its few entries with mass;
- the prior is w_pop[bucket(h)] . log p_pop.

So the user rows are [h + (w_q / std A) q, the memory's two values, the prior's weight] and the
item table [E, known, unknown, log p_pop]: one matmul per block gives all of it, the memory's
entries with mass are added after it, and pCTCVR (two log-sigmoids, no product) where it
weighs. The normaliser's exponentials, which cost as much as the matmul itself, and one pass
over the block per term are never paid.

The result equals combine's less a per-user constant, to float32 rounding
(tests/test_mtrl_memory.py): the published score orders a user's items, like the ranking
head's logits on the fast path, and is not comparable across users.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys.models.mtrl.blend import bucket_of, buy_part, prior_over
from recsys.models.mtrl.inference import encoded_blocks

# Histories encoded at a time, as network_parts encodes them.
STATE_BLOCK = 512


def _q_scale(q: torch.Tensor, covariance: torch.Tensor) -> torch.Tensor:
    """(B, D) Q-head states -> (B, 1) 1 / std over items of q E^T, as q_part's clamped std."""
    var = ((q @ covariance) * q).sum(1, keepdim=True).clamp(min=0.0)
    return 1.0 / var.sqrt().clamp(min=1e-6)


class ServedScorer:
    """The served score (module docstring) for blocks of histories, written into one (B, I)
    float32 buffer that the caller may reuse."""

    def __init__(self, model):
        self.net = net = model._ready()
        self.default_type = model.meta.get("default_type", 0)
        self.blend = b = model.blend
        self.width = width = net.n_items
        with torch.no_grad():
            self.table = table = net.item_table()  # (I, D)
        self.skip = frozenset(name for name, w in (("q", b.q), ("ctr", b.buy)) if w <= 0)
        self.memory = model.memory if model.memory is not None and b.memory > 0 else None
        extra = []
        if self.memory is not None:
            known = torch.from_numpy(self.memory.known(width).astype(np.float32))
            extra += [known, 1.0 - known]
        self.pop_weights = None
        if model.prior is not None and any(w > 0 for w in b.pop):
            extra.append(torch.from_numpy(np.asarray(prior_over(model.prior, width), np.float32)))
            self.pop_weights = np.asarray(b.pop, np.float32)
        columns = [table] + ([torch.stack(extra, 1).to(table)] if extra else [])
        self.table_t = torch.cat(columns, 1).T.contiguous()  # (D + extra, I): the layout a GEMM streams best
        self.covariance = None
        if "q" not in self.skip and net.q_proj is not None:
            centred = (table - table.mean(0)).double()
            self.covariance = (centred.T @ centred / max(width - 1, 1)).to(table)

    @torch.no_grad()
    def __call__(self, histories, events=None, ts=None, out: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) histories -> (B, I) float32 served scores, written into out[:B] when `out` has
        room (a buffer the caller reuses), else into a new tensor."""
        histories = list(histories)
        n, width, device = len(histories), self.width, self.table.device
        if out is None or out.shape[0] < n or out.shape[1] != width:
            out = torch.empty((n, width), dtype=torch.float32, device=device)
        s = out[:n]
        d = self.table.shape[1]
        users = torch.zeros((n, self.table_t.shape[0]), dtype=torch.float32)
        mem = None
        if self.memory is not None:
            mem = self.memory.sparse_log(histories, width)
            w = np.float32(self.blend.memory)
            users[:, d] = torch.from_numpy(np.where(mem.evidence, w * mem.floor, 0.0).astype(np.float32))
            users[:, d + 1] = torch.from_numpy(np.where(mem.evidence, w * mem.typical, 0.0).astype(np.float32))
        if self.pop_weights is not None:
            lengths = np.fromiter((len(h) for h in histories), np.int64, count=n)
            users[:, -1] = torch.from_numpy(self.pop_weights[bucket_of(lengths)])
        users = users.to(device)
        net = self.net
        was_training = net.training
        net.eval()
        for sl, items, btype, gap, length in encoded_blocks(net, histories, events, ts, self.default_type, STATE_BLOCK):
            heads = net.last_states(items, btype, gap, length, self.table, self.skip)
            u = heads["rank"]
            if self.covariance is not None:
                u = u + (self.blend.q * _q_scale(heads["q"], self.covariance)) * heads["q"]
            users[sl, :d] = u
            rows = s[sl]
            torch.matmul(users[sl], self.table_t, out=rows)
            if "ctr" in heads:
                rows.add_(buy_part(heads, self.table.T).mul_(self.blend.buy))
        net.train(was_training)
        if mem is not None and len(mem.cells):
            # On top of the known items' floor the matmul gave them: the entries with mass.
            lift = torch.from_numpy(np.float32(self.blend.memory) * (mem.log_p - mem.floor)).to(device)
            s.view(-1).index_add_(0, torch.from_numpy(mem.cells).to(device), lift)
        return s
