"""The multi-task RL recommender network: one state encoder, four heads.

    item table   E = has_id * E_id + W_text x_text                     (I, D)
    state        h_t = Transformer_causal(E[i_<=t] + pos + behaviour + gap)   (B, T, D)
    ranking      logits = h_t E^T                     softmax CE on the next item
    Q head       Q(s_t, a) = V(h_t) + (W_q h_t) . sg(E_a)   dueling; TD(0), double Q, target net
    behaviour    pCTR, pCVR from (W_c h_t) . E_a      ESMM over all impressions
    rating       r_hat = (W_r h_t + b) . E_a          MSE on z-scored ratings where one exists

Right-padded sequences with causal attention: a real position never sees padding, so no
padding mask is needed. Formulas and reasons: docs/MODEL.md.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from recsys.models.mtrl import losses as L
from recsys.models.mtrl.batches import CLICK, N_TYPES, PURCHASE
from recsys.models.mtrl.config import MTRLConfig


def step_rows(batch: dict[str, torch.Tensor], neg: torch.Tensor, q_neg: torch.Tensor | None):
    """The item rows one training step reads, sorted (R,), and the step's batch and negatives
    with every item index renumbered to its position in them (a target of -1 stays -1)."""
    target = batch["target"]
    parts = [batch["item"].reshape(-1), target[target >= 0], neg] + ([q_neg] if q_neg is not None else [])
    rows = torch.unique(torch.cat(parts))

    def renumber(x: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(rows, x)

    batch = {**batch, "item": renumber(batch["item"]),
             "target": torch.where(target >= 0, renumber(target.clamp(min=0)), target)}
    return rows, batch, renumber(neg), None if q_neg is None else renumber(q_neg)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: MTRLConfig):
        super().__init__()
        self.n_heads, self.dropout = cfg.n_heads, cfg.dropout
        self.qkv = nn.Linear(cfg.d, 3 * cfg.d)
        self.proj = nn.Linear(cfg.d, cfg.d)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)  # (B, T, D) each
        q, k, v = (z.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2) for z in (q, k, v))  # (B, H, T, Dh)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, D)
        return self.drop(self.proj(y))


class Block(nn.Module):
    """Pre-LayerNorm transformer block (nanoGPT)."""

    def __init__(self, cfg: MTRLConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d), nn.LayerNorm(cfg.d)
        self.attn = CausalSelfAttention(cfg)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d, 4 * cfg.d), nn.GELU(), nn.Linear(4 * cfg.d, cfg.d), nn.Dropout(cfg.dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class MTRLNet(nn.Module):
    def __init__(self, cfg: MTRLConfig, n_items: int, text_dim: int = 0):
        super().__init__()
        self.cfg = cfg
        use_id = cfg.item_repr in ("id", "both")
        use_text = cfg.item_repr in ("text", "both") and text_dim > 0
        self.item_id = nn.Embedding(n_items, cfg.d) if use_id else None
        self.text_proj = nn.Linear(text_dim, cfg.d, bias=False) if use_text else None
        # Frozen language-model vectors; row i is item_idx i, zeros where an item has no text.
        self.register_buffer("text", torch.zeros(n_items, text_dim if use_text else 0))
        # 1 for items seen in training; the rest are represented by their text alone.
        self.register_buffer("has_id", torch.ones(n_items))
        # Rating mean and spread of the training data: the rating head predicts z-scores.
        self.register_buffer("rating_stats", torch.tensor([0.0, 1.0]))
        # Training popularity of items (smoothed over trained items): the proposal for sampled
        # softmax and Q negatives. Set by training, not saved.
        self.register_buffer("sample_p", torch.full((n_items,), 1.0 / n_items), persistent=False)
        # Values a return can take, [min(r, 0), max(r, 0)] / (1 - gamma): bootstrapped values
        # are clipped to it, which keeps the max over a large catalogue from diverging.
        self.register_buffer("q_range", torch.tensor([-1.0, 1.0]) / (1.0 - cfg.gamma))

        self.pos = nn.Embedding(cfg.max_len, cfg.d)
        self.behaviour = nn.Embedding(N_TYPES, cfg.d) if cfg.side_inputs else None
        self.gap = nn.Embedding(cfg.n_gap_buckets, cfg.d) if cfg.side_inputs else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_f = nn.LayerNorm(cfg.d)

        self.q_proj = nn.Linear(cfg.d, cfg.d) if cfg.q_head else None  # advantage A(s, a) = (W_q h) . E_a
        self.q_value = nn.Linear(cfg.d, 1) if cfg.q_head else None  # state value V(s) (dueling)
        self.ctr = nn.Linear(cfg.d, cfg.d) if cfg.behaviour_heads else None
        self.cvr = nn.Linear(cfg.d, cfg.d) if cfg.behaviour_heads else None
        self.rate = nn.Linear(cfg.d, cfg.d) if cfg.rating_head else None
        self.tasks = ("rank",) + tuple(
            t for t, on in (("q", cfg.q_head), ("behaviour", cfg.behaviour_heads), ("rating", cfg.rating_head)) if on
        )
        fixed = {"rank": 1.0, "q": cfg.w_q, "behaviour": cfg.w_behaviour, "rating": cfg.w_rating}
        self.task_weights = L.TaskWeights(self.tasks, fixed, learned=cfg.weighting == "uncertainty")
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    @property
    def n_items(self) -> int:
        return self.has_id.shape[0]

    def item_table(self, id_dropout: float = 0.0, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(I, D) item representations: id part (only for items seen in training) + text part;
        with `rows` (R,) item indices, only those rows (R, D).

        id_dropout: share of items whose id part is hidden for this step (training only), so
        text-only vectors, what a cold item has, learn to compete in the softmax (DropoutNet).
        """
        has_id = self.has_id if rows is None else self.has_id[rows]
        e = torch.zeros(len(has_id), self.cfg.d, device=has_id.device)
        if self.item_id is not None:
            keep = has_id
            if id_dropout > 0 and self.text_proj is not None:
                keep = keep * (torch.rand_like(keep) >= id_dropout)
            e = e + (self.item_id.weight if rows is None else self.item_id.weight[rows]) * keep[:, None]
        if self.text_proj is not None:
            e = e + self.text_proj(self.text if rows is None else self.text[rows])
        return e

    def encode(self, items: torch.Tensor, btype: torch.Tensor, gap: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) items, behaviours, gap buckets -> (B, T, D) states; state t has seen steps <= t."""
        table = self.item_table() if table is None else table
        T = items.shape[1]
        x = table[items] + self.pos.weight[:T]  # (B, T, D)
        if self.behaviour is not None:
            x = x + self.behaviour(btype) + self.gap(gap)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def forward(self, batch: dict[str, torch.Tensor], target_net: "MTRLNet | None" = None, sac: bool = False, sa2c: bool = False):
        """Training step: returns (total loss, per-task losses detached)."""
        cfg = self.cfg
        rows = None
        if self.n_items > cfg.full_softmax_max_items:
            # A large catalogue: the softmax is sampled, and the step computes only the item rows
            # it reads (its inputs, targets and sampled negatives), renumbered 0..R-1, rather than
            # the whole table through the text projection, and takes the Q head's max over them.
            neg = torch.multinomial(self.sample_p, cfg.n_sampled, replacement=True)
            q_neg = torch.multinomial(self.sample_p, cfg.q_negatives, replacement=True) if self.q_proj is not None else None
            rows, batch, neg, q_neg = step_rows(batch, neg, q_neg)
        table = self.item_table(cfg.id_dropout, rows)  # (I, D), or (R, D)
        h = self.encode(batch["item"], batch["btype"], batch["gap"], table)  # (B, T, D)
        m = batch["target"] >= 0  # (B, T) positions that predict a next step
        hs, tgt = h[m], batch["target"][m]  # (N, D), (N,)
        e_tgt = table[tgt]  # (N, D)
        parts: dict[str, torch.Tensor] = {}

        # --- ranking: softmax over the catalogue (sampled when it is large) ---
        if rows is not None:
            ce = L.sampled_ce(hs, table, tgt, neg, self.sample_p[rows].log())  # (N,)
        else:
            seen = self.has_id > 0  # (I,) items with training interactions: the only negatives
            ce = L.ranking_ce(hs, table, tgt, seen)  # (N,)

        # --- Q head: TD(0) with double Q and a soft target network (SQN / SNQN) ---
        if self.q_proj is not None:
            # As in SQN the Q head shares the encoder, not the item vectors: it reads them
            # detached, so TD regression cannot pull the ranking head's item table around.
            e_q = table.detach()  # (I, D)
            qh = self.q_proj(h)  # (B, T, D)
            v_s = self.q_value(hs).squeeze(-1)  # (N,) V(s_t)
            q_sa = v_s + (qh[m] * e_q[tgt]).sum(-1)  # (N,) Q(s_t, a_t) = V(s_t) + A(s_t, a_t)
            with torch.no_grad():
                v = self._target_values(batch, qh, e_q, target_net if target_net is not None else self, rows)  # (B, T) V(s_t)
                v_next = F.pad(v[:, 1:], (0, 1))  # (B, T) V(s_{t+1})
                y = L.td_target(batch["reward"], batch["done"], v_next, cfg.gamma)[m]  # (N,)
            fit = (batch["done"] | batch["boot"])[m]  # a truncated window has no next state
            l_q = L.masked_mean((q_sa - y) ** 2, fit)
            # unobserved actions, drawn by popularity (what a user was likely shown but passed
            # over): reward 0 and the state stays s_t, so y = gamma V(s_t)
            if rows is None:
                q_neg = torch.multinomial(self.sample_p, cfg.q_negatives, replacement=True)
            q_pass = v_s[:, None] + qh[m] @ e_q[q_neg].T  # (N, K)
            y_neg = (cfg.gamma * v[m]).unsqueeze(1)  # (N, 1)
            parts["q"] = l_q + L.masked_mean((q_pass - y_neg) ** 2, q_neg[None, :] != tgt[:, None])
            if sac:  # SAC: detached Q(s, a) weights each position's ranking loss (batch mean 1)
                w = q_sa.detach().clamp(min=0)
                w = (w / w.mean()).clamp(max=3.0) if w.sum() > 0 else torch.ones_like(w)
                ce = ce * w
            elif sa2c:  # SA2C: weighted by the advantage over the passed-over actions
                ce = ce * L.advantage_weights(q_sa, q_pass)
        parts["rank"] = ce.mean()

        # --- behaviour: ESMM over every impression (a step of type view..purchase) ---
        if self.ctr is not None:
            t_type = batch["t_type"][m]
            ctr_logit = (self.ctr(hs) * e_tgt).sum(-1)  # (N,)
            cvr_logit = (self.cvr(hs) * e_tgt).sum(-1)  # (N,)
            click = (t_type >= CLICK) & (t_type <= PURCHASE)
            parts["behaviour"] = L.esmm_loss(ctr_logit, cvr_logit, click, t_type == PURCHASE, t_type <= PURCHASE)

        # --- rating regression where the next step has a rating ---
        if self.rate is not None:
            r = batch["rating"][m]
            rated = ~torch.isnan(r)
            z = (torch.nan_to_num(r) - self.rating_stats[0]) / self.rating_stats[1]
            pred = (self.rate(hs) * e_tgt).sum(-1)  # (N,)
            parts["rating"] = L.masked_mean((pred - z) ** 2, rated)

        loss = self.task_weights(parts)
        return loss, {k: v.detach() for k, v in parts.items()}

    def _target_values(self, batch, qh: torch.Tensor, table: torch.Tensor, target: "MTRLNet", rows=None) -> torch.Tensor:
        """V(s_t) = Q_target(s_t, argmax_a Q_online(s_t, a)), clipped to q_range, per position. -> (B, T).
        With `rows` (a large catalogue's step), the items are those rows and the max is over them."""
        B, T = batch["item"].shape
        real = torch.arange(T, device=qh.device)[None, :] < batch["length"][:, None]  # (B, T)
        a_star = torch.zeros(B, T, dtype=torch.long, device=qh.device)
        has_id = self.has_id if rows is None else self.has_id[rows]
        trained = (has_id > 0).nonzero().squeeze(1)  # A(s, .) over trained items: the others' rows left out
        a_star[real] = trained[(qh[real] @ table[trained].T).argmax(-1)]  # online argmax of A, so of Q
        t_table = target.item_table(rows=rows)
        t_h = target.encode(batch["item"], batch["btype"], batch["gap"], t_table)  # (B, T, D)
        v = target.q_value(t_h).squeeze(-1) + (target.q_proj(t_h) * t_table[a_star]).sum(-1)
        return v.clamp(float(self.q_range[0]), float(self.q_range[1]))

    @torch.no_grad()
    def user_vectors(
        self, items: torch.Tensor, btype: torch.Tensor, gap: torch.Tensor, length: torch.Tensor, head: str = "rank",
        blend: float = 1.0, table: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) histories + lengths (B,) -> (B, D) vectors u with scores u . E_i for every item.

        rank: u = h (the ranking logits); q: u = W_q h (the advantage A(s, .), which is Q(s, .)
        less the state value V(s)); blend: u = h + blend W_q h, i.e. logits + blend * A. Each
        differs from its textbook form (Q, log_softmax + blend * Q) by a per-user constant
        only, so it ranks every user's items identically. `table`: item_table(), when the
        caller scores many blocks with the same one.
        """
        h = self.encode(items, btype, gap, table)  # (B, T, D)
        last = h[torch.arange(len(length), device=h.device), length - 1]  # (B, D)
        if head == "rank":
            return last
        q = self.q_proj(last)  # (B, D)
        return q if head == "q" else last + blend * q

    @torch.no_grad()
    def last_states(
        self, items: torch.Tensor, btype: torch.Tensor, gap: torch.Tensor, length: torch.Tensor,
        table: torch.Tensor | None = None, skip: frozenset[str] = frozenset(),
    ) -> dict[str, torch.Tensor]:
        """(B, T) histories + lengths (B,) -> the last state's vector per head, each (B, D), with
        scores u . E_a: `rank` (logits), `q` (advantage), `ctr` and `cvr` (ESMM logits), less
        the heads named in `skip` (q, ctr: the behaviour pair). `table`: item_table(), which
        with a text tower costs about as much as a block's scores, so a scorer of many blocks
        computes it once and passes it."""
        h = self.encode(items, btype, gap, table)  # (B, T, D)
        last = h[torch.arange(len(length), device=h.device), length - 1]  # (B, D)
        out = {"rank": last}
        if self.q_proj is not None and "q" not in skip:
            out["q"] = self.q_proj(last)
        if self.ctr is not None and "ctr" not in skip:
            out["ctr"], out["cvr"] = self.ctr(last), self.cvr(last)
        return out

    @torch.no_grad()
    def predict(self, items: torch.Tensor, btype: torch.Tensor, gap: torch.Tensor, length: torch.Tensor, head: str = "rank", blend: float = 1.0) -> torch.Tensor:
        """(B, T) histories + lengths (B,) -> (B, I) scores of the next item from the last state."""
        return self.user_vectors(items, btype, gap, length, head, blend) @ self.item_table().T

    @torch.no_grad()
    def grow_items(self, n_items: int, text: torch.Tensor | None = None) -> None:
        """Extend the catalogue to n_items: new items get no id vector (text only, cold start).

        `text` (n_items', Dt) replaces the text rows it covers (new and re-encoded items).
        """
        old = self.n_items
        if n_items > old:
            dev = self.has_id.device
            if self.item_id is not None:
                w = torch.cat([self.item_id.weight.data, torch.zeros(n_items - old, self.cfg.d, device=dev)])
                self.item_id = nn.Embedding.from_pretrained(w, freeze=False)
            self.has_id = torch.cat([self.has_id, torch.zeros(n_items - old, device=dev)])
            self.sample_p = torch.cat([self.sample_p, torch.zeros(n_items - old, device=dev)])
            self.text = torch.cat([self.text, torch.zeros(n_items - old, self.text.shape[1], device=dev)])
        if text is not None and self.text_proj is not None:
            rows = min(len(text), self.n_items)
            self.text[:rows] = text[:rows].to(self.text)
