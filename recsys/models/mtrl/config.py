"""MTRLConfig: every setting of the multi-task RL recommender, each default with its reason.

Presets name the ablations (`full`, `no_text`, `no_q`, `no_behaviour`, `no_memory`,
`sasrec_ce`); a preset is a set of overrides on the defaults, and explicit overrides win over
the preset.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace

from recsys.errors import ConfigError

ITEM_REPRS = ("id", "text", "both")
WEIGHTINGS = ("fixed", "uncertainty")
SCORE_HEADS = ("rank", "q", "blend")


@dataclass(frozen=True)
class MTRLConfig:
    # --- item representation ---
    # id + text: items with history keep their own vector, new items still get one from text.
    item_repr: str = "both"

    # Share of items whose id vector is hidden each step (with text only): text-only vectors,
    # all a cold item has, must then rank on their own (DropoutNet, Volkovs et al. 2017).
    id_dropout: float = 0.2

    # --- state encoder (SASRec-sized: what published full-ranking numbers use) ---
    # Last 50 interactions: S3-Rec/SASRec use 50 on Amazon; longer adds cost, little signal.
    max_len: int = 50
    # Windows over long histories do not overlap, so each target is seen once per epoch.
    window_stride: int = 50
    # 64 is the published SASRec/S3-Rec hidden size for these data sizes.
    d: int = 64
    n_layers: int = 2
    n_heads: int = 2
    # Sparse Amazon-style data overfits fast: 0.5 (SASRec's Amazon value) beat 0.3 on Toys.
    dropout: float = 0.5
    # Behaviour-type and time-gap embeddings; off makes the encoder a plain SASRec.
    side_inputs: bool = True
    # log2(seconds) buckets: bucket 1+k holds gaps of about 2^k s; 22 buckets reach ~24 days.
    n_gap_buckets: int = 24
    # Serving histories carry no timestamps: hiding gaps in a share of training windows
    # teaches the encoder to do without them.
    gap_dropout: float = 0.25

    # --- ranking head ---
    # Above this many items the softmax is sampled (with log-Q correction): full logits
    # for (positions x items) stop fitting in memory. A time budget too short for `min_epochs`
    # full-softmax epochs also switches to it (train.SOFTMAX_PROBE_STEPS).
    full_softmax_max_items: int = 50_000
    # Negatives per batch for the sampled softmax, drawn by training popularity. On the 1M-event
    # log (5,000 items) 1,024 made a step 3.3x cheaper than the full softmax, and a budget-bound
    # night then ranked better than the same night trained to early stopping on the full one
    # (docs/BENCHMARKS.md, "A budget too short for the full softmax").
    n_sampled: int = 1024

    # --- Q-learning head (SQN / SNQN, Xin et al. 2020/2022) ---
    q_head: bool = True
    # SQN's discount: the next few interactions matter, the far future is noise.
    gamma: float = 0.5
    # Soft target update p' <- (1 - tau) p' + tau p per step: a target that lags ~100 steps.
    tau: float = 0.01
    # Unobserved actions (reward 0, state unchanged) so Q ranks, not only regresses (SNQN);
    # drawn by popularity, the items a user most likely saw and passed over.
    q_negatives: int = 64
    # Reward of each behaviour, indexed like schema.EVENT_TYPES (view, click, cart,
    # purchase, rating); the default funnel values.
    rewards: tuple[float, ...] = (0.0, 0.2, 0.5, 1.0, 0.0)
    # A rating r adds clip((r - mid) / scale, -1, 1): 5 stars +1, 1 star -1, 3 stars 0.
    rating_reward_mid: float = 3.0
    rating_reward_scale: float = 2.0
    # SAC variant: the ranking loss of each position is weighted by its detached Q value.
    sac: bool = False
    # SA2C variant (Xin et al. 2022): weighted by the advantage of the observed action over the
    # Q head's sampled negatives instead (losses.advantage_weights); `sac` wins if both are on.
    sa2c: bool = False
    # Q is meaningless at the start; weighting begins after this many steps (SQN does the same).
    sac_warmup_steps: int = 500

    # --- behaviour (ESMM) and rating heads ---
    behaviour_heads: bool = True
    rating_head: bool = True

    # --- task weighting ---
    # `fixed` uses the w_* below; `uncertainty` learns them (Kendall et al. 2018), see MODEL.md.
    weighting: str = "fixed"
    # Auxiliary tasks regularise the shared encoder; at these weights they never cost ranking
    # quality on the dev sets (docs/MODEL.md), at 1.0 the Q loss did.
    w_q: float = 0.1
    w_behaviour: float = 0.1
    w_rating: float = 0.1

    # --- which score serves ---
    # `rank`: ranking head; `q`: Q head; `blend`: rank logits + blend_weight * Q.
    score_head: str = "rank"
    blend_weight: float = 1.0
    # Item-to-item memory combined with the served distribution (memory.py, a product of
    # experts): counting carries items with few interactions, which a learned vector does not.
    memory: bool = True
    # Weight (exponent) of the memory's distribution, >= 0; -1 = chosen on the validation cases.
    memory_weight: float = -1.0
    # Serve what the Q head, the behaviour heads and a popularity prior add (blend.py), each
    # weighted as the validation cases' expected reward says; off serves the ranking head
    # (with the memory).
    reward_blend: bool = True
    # Gain of a validation target that was only viewed, against a purchase's reward (1.0):
    # attention is worth something, and with 0 the choice would ignore most of the log.
    gain_floor: float = 0.1
    # The prior counts distinct users per item over the last week, as the popularity baseline.
    prior_days: int = 7

    # --- optimisation ---
    # A step holds at most 256 windows (SASRec's batch) and 2048 predicted positions: that
    # is 256 Amazon-length histories, while long-history data (MovieLens, the demo log) gets
    # more, smaller steps per epoch; logits memory stays bounded at positions x items.
    batch_size: int = 256
    batch_positions: int = 2048
    # 2e-3 reached 1e-3's best Toys validation NDCG in ~40% fewer epochs (docs/MODEL.md).
    lr: float = 2e-3
    weight_decay: float = 0.0
    # A short warm-up keeps the first Adam steps from wrecking the fresh embeddings.
    warmup_steps: int = 100
    grad_clip: float = 1.0
    # Upper bound only: early stopping on validation NDCG@10 ends runs well before it.
    max_epochs: int = 40
    # Stop after this many optimiser steps (0 = no limit): smoke tests and the GPU check.
    max_steps: int = 0
    # After early stopping on validation, this many epochs over train + validation (see
    # MTRLModel.fit): the served model then knows the newest day, which early stopping had to
    # hold out. +0.005 NDCG@10 on the demo's test day with 1 (docs/MODEL.md).
    refit_epochs: int = 1
    # Epochs without a validation gain before stopping; dev curves are noisy at 1-2 epochs.
    patience: int = 5
    # Patience does not end a run before this many epochs (the budget and max_epochs still
    # do): on the 6,000-user log a run's validation can peak at epoch 1, when the network
    # knows popularity and little else, and dip for five epochs before it learns sequences;
    # patience then kept the epoch-1 weights (docs/BENCHMARKS.md). The best epoch is still
    # what is kept, so a run that peaks early only pays for the extra epochs.
    min_epochs: int = 10
    # Seconds the training loop may take, refit included (0 = no limit): early stopping ends
    # most runs first, but a large night on a CPU must still finish inside its window, even
    # where one epoch is longer than the budget; the loop stops at the step that leaves just
    # the time for an evaluation and the refit (train.REFIT_BUDGET_SHARE).
    budget_seconds: float = 0.0
    # With a budget, the learning rate falls linearly from its value to nothing over the time the
    # budget leaves the loop (what is left after the reserved evaluation and refit), so a run
    # the budget stops before it converges ends on small steps instead of mid-stride ("budgeted
    # training", Li et al., ICLR 2020). A run that early stopping ends first stops part-way down.
    budget_lr_decay: bool = True
    # Epochs of a warm start (a compatible champion given): the champion already fits the older
    # windows, so a few passes over what is new since it trained do; early stopping on
    # validation still keeps the best. On the demo log over 6 nights, 5 kept NDCG@10 at 0.99x
    # a from-scratch run's in 0.21x its CPU time; 3 fell to 0.97x (docs/BENCHMARKS.md).
    warm_epochs: int = 5
    # Share of the older windows a warm start replays beside the new ones: fine-tuning on the
    # newest days alone drifts towards them and forgets the rest (catastrophic forgetting); a
    # seeded fifth keeps the older log in every epoch for a fifth of what passing over it costs.
    replay_share: float = 0.2
    # Validation users ranked per epoch (a fixed subset above this): a 5,000-user subset
    # misjudged Toys models by up to 0.007 NDCG (2-3 standard errors); all 19k cost ~3 s.
    eval_users: int = 20_000
    seed: int = 0
    # `auto` = CUDA when torch sees one, else CPU.
    device: str = "auto"
    # bf16 autocast on CUDA (ignored on CPU, where it is slower and changes results).
    amp: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.item_repr in ITEM_REPRS, f"item_repr must be one of {ITEM_REPRS}"),
            (self.weighting in WEIGHTINGS, f"weighting must be one of {WEIGHTINGS}"),
            (self.score_head in SCORE_HEADS, f"score_head must be one of {SCORE_HEADS}"),
            (self.d % self.n_heads == 0, "d must be divisible by n_heads"),
            (self.max_len >= 2 and self.window_stride >= 1, "max_len >= 2 and window_stride >= 1"),
            (0.0 <= self.dropout < 1.0 and 0.0 <= self.gap_dropout <= 1.0 and 0.0 <= self.id_dropout < 1.0, "dropouts in [0, 1)"),
            (0.0 <= self.gamma < 1.0, "gamma must be in [0, 1)"),
            (0.0 < self.tau <= 1.0, "tau must be in (0, 1]"),
            (len(self.rewards) == 5, "rewards needs one value per event type (5)"),
            (self.n_gap_buckets >= 2, "n_gap_buckets must be at least 2"),
            (self.batch_size >= 1 and self.lr > 0, "batch_size >= 1 and lr > 0"),
            (self.refit_epochs >= 0 and self.min_epochs >= 0 and self.patience >= 1, "refit_epochs >= 0, min_epochs >= 0 and patience >= 1"),
            (self.warm_epochs >= 1 and 0.0 <= self.replay_share <= 1.0, "warm_epochs >= 1 and replay_share in [0, 1]"),
            (self.score_head == "rank" or self.q_head, "score_head q/blend needs q_head"),
            (self.memory_weight == -1.0 or self.memory_weight >= 0.0, "memory_weight must be -1 (auto) or >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"mtrl config: {msg}")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["rewards"] = list(self.rewards)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "MTRLConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"mtrl config: unknown setting(s) {unknown}")
        d = dict(d)
        if "rewards" in d:
            d["rewards"] = tuple(float(r) for r in d["rewards"])
        return cls(**d)


# Ablations from config: each names what it removes from `full`.
PRESETS: dict[str, dict] = {
    "full": {},
    "no_text": {"item_repr": "id"},
    "no_q": {"q_head": False, "sac": False, "sa2c": False},
    "no_behaviour": {"behaviour_heads": False, "rating_head": False},
    "no_memory": {"memory": False},
    # SASRec trained with full-catalogue cross-entropy: ids only, one task, no side inputs.
    "sasrec_ce": {
        "item_repr": "id", "q_head": False, "sac": False, "sa2c": False, "behaviour_heads": False,
        "rating_head": False, "side_inputs": False, "memory": False, "reward_blend": False,
    },
}


def make_config(preset: str = "full", **overrides) -> MTRLConfig:
    """The preset's settings with `overrides` on top (explicit overrides win)."""
    if preset not in PRESETS:
        raise ConfigError(f"mtrl: unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    return MTRLConfig.from_dict({**PRESETS[preset], **overrides})


def with_changes(cfg: MTRLConfig, **changes) -> MTRLConfig:
    return replace(cfg, **changes)


def parse_setting(kv: str) -> tuple[str, object]:
    """`KEY=VALUE` from a command line -> (key, value), the value read as JSON when it is JSON
    (numbers, booleans, lists) and kept as a string otherwise."""
    key, _, raw = kv.partition("=")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw
