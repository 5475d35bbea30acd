"""Loss functions of the multi-task model; pure tensor functions, formulas in the docstrings.

N is the number of trained positions in a batch, I the catalogue size, D the hidden size.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

TASKS = ("rank", "q", "behaviour", "rating")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean of x over mask; 0 (still attached to the graph) when the mask is empty."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def ranking_ce(h: torch.Tensor, table: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Full-catalogue softmax cross-entropy per position: -log softmax(h E^T)[target].

    h (N, D), table E (I, D), target (N,) -> (N,). `allowed` (I,) bool: the softmax runs over
    these items only (items without training interactions are never pushed down as negatives),
    every target among them. The product is taken with the allowed rows alone: the same loss as
    masking the others' logits to -inf, without a pass over the (N, I) logits and its backward.
    """
    if allowed is not None:
        rows = allowed.nonzero().squeeze(1)
        if len(rows) < len(allowed):
            table, target = table[rows], torch.searchsorted(rows, target)
    return F.cross_entropy(h @ table.T, target, reduction="none")


def sampled_ce(
    h: torch.Tensor, table: torch.Tensor, target: torch.Tensor, neg: torch.Tensor, log_q: torch.Tensor
) -> torch.Tensor:
    """Sampled softmax with log-Q correction (Yi et al. 2019), per position.

    Logits s_j = h.e_j - log(K q_j) over the target and K shared negatives drawn from q;
    a negative equal to the target is masked. neg (K,), log_q (I,) log proposal probs -> (N,).
    """
    k = neg.numel()
    pos = (h * table[target]).sum(-1) - (math.log(k) + log_q[target])  # (N,)
    negs = h @ table[neg].T - (math.log(k) + log_q[neg])  # (N, K)
    negs = negs.masked_fill(neg[None, :] == target[:, None], float("-inf"))
    logits = torch.cat([pos[:, None], negs], dim=1)  # (N, 1 + K)
    return F.cross_entropy(logits, torch.zeros_like(target), reduction="none")


def td_target(reward: torch.Tensor, done: torch.Tensor, next_value: torch.Tensor, gamma: float) -> torch.Tensor:
    """TD(0) target y = r + gamma (1 - done) V(s'), with no gradient. All (N,) -> (N,)."""
    return (reward + gamma * (1.0 - done.to(reward.dtype)) * next_value).detach()


def advantage_weights(q_sa: torch.Tensor, q_neg: torch.Tensor, cap: float = 3.0) -> torch.Tensor:
    """SA2C-style weights (Xin et al. 2022) of each position's ranking loss, detached, batch mean 1.

    A(s, a) = Q(s, a) - mean of Q over {a} and the K sampled actions: how much more the
    observed action paid than what the user passed over. w = clip(1 + A, 0, cap) / mean, so
    an action worth a purchase counts about twice a view, one worth less than the passed-over
    items counts less, and the loss keeps its scale. q_sa (N,), q_neg (N, K) -> (N,).
    """
    with torch.no_grad():
        adv = q_sa - torch.cat([q_sa[:, None], q_neg], dim=1).mean(dim=1)
        w = (1.0 + adv).clamp(min=0.0, max=cap)
        return w / w.mean() if w.sum() > 0 else torch.ones_like(w)


def esmm(ctr_logit: torch.Tensor, cvr_logit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ESMM (Ma et al. 2018): pCTR, pCVR = P(buy | click), pCTCVR = pCTR x pCVR."""
    p_ctr, p_cvr = torch.sigmoid(ctr_logit), torch.sigmoid(cvr_logit)
    return p_ctr, p_cvr, p_ctr * p_cvr


def esmm_loss(
    ctr_logit: torch.Tensor, cvr_logit: torch.Tensor, click: torch.Tensor, buy: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """BCE(pCTR, click) + BCE(pCTCVR, click & buy) over every impression in `mask`.

    pCVR is never fitted on its own, only through pCTCVR over all impressions, which is what
    removes ESMM's sample-selection bias. Computed in log space: log pCTCVR = log s(a) + log s(b).
    """
    click, buy = click.to(ctr_logit.dtype), buy.to(ctr_logit.dtype)
    l_ctr = F.binary_cross_entropy_with_logits(ctr_logit, click, reduction="none")
    log_p = F.logsigmoid(ctr_logit) + F.logsigmoid(cvr_logit)  # log pCTCVR (N,)
    log_not = torch.log(-torch.expm1(log_p.clamp(max=-1e-6)))  # log(1 - pCTCVR)
    l_ctcvr = -(buy * log_p + (1 - buy) * log_not)
    return masked_mean(l_ctr + l_ctcvr, mask)


class TaskWeights(nn.Module):
    """Combine task losses: fixed weights, or learned ones (homoscedastic uncertainty).

    fixed: L = sum_i w_i L_i. uncertainty (Kendall et al. 2018): L = sum_i exp(-s_i) L_i + s_i,
    one learned log-variance s_i per task, clamped to [-3, 3] so that a task whose loss
    reaches ~0 cannot take an unbounded weight.
    """

    def __init__(self, tasks: tuple[str, ...], fixed: dict[str, float], learned: bool):
        super().__init__()
        self.tasks = tasks
        self.learned = learned
        self.register_buffer("fixed", torch.tensor([fixed[t] for t in tasks], dtype=torch.float32))
        self.log_var = nn.Parameter(torch.zeros(len(tasks))) if learned else None

    def forward(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        losses = torch.stack([parts[t] for t in self.tasks])  # (n_tasks,)
        if not self.learned:
            return (self.fixed * losses).sum()
        s = self.log_var.clamp(-3.0, 3.0)
        return (torch.exp(-s) * losses + s).sum()

    def weights(self) -> dict[str, float]:
        w = torch.exp(-self.log_var.detach().clamp(-3.0, 3.0)) if self.learned else self.fixed
        return {t: round(float(x), 4) for t, x in zip(self.tasks, w)}
