"""The gate refuses models that learned nothing and promotes one that clearly learned."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.config import Settings
from recsys.data.generate import GenerateConfig, generate
from recsys.evaluate.gate import GateRules, decide
from recsys.evaluate.offline import context_for, evaluate_model
from recsys.evaluate.protocol import temporal_cases
from recsys.models import build_model
from tests.helpers import interactions_from_raw

RULES = GateRules.from_settings(Settings())


class RandomModel:
    """Random scores: what a network with untrained weights ranks like."""

    kind = "random"

    def __init__(self, n_items: int, seed: int = 0):
        self.n_items, self.rng = n_items, np.random.default_rng(seed)

    def score(self, histories):
        return self.rng.random((len(histories), self.n_items), dtype=np.float32)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    lake = tmp_path_factory.mktemp("lake")
    cfg = GenerateConfig(n_users=600, n_items=300, days=14, seed=1)
    generate(lake, cfg)
    data = interactions_from_raw(lake, cfg.end_date)
    fit = data.in_splits("train", "valid")
    return data, fit, temporal_cases(data), context_for(fit)


def _metrics(challenger, split):
    data, fit, cases, ctx = split
    return {
        "challenger": evaluate_model(challenger, cases, ctx),
        "popularity": evaluate_model(build_model("popularity").fit(fit), cases, ctx),
    }


def test_random_weights_are_refused(split):
    data = split[0]
    d = decide(_metrics(RandomModel(data.n_items), split), RULES)
    assert d.decision == "fail", d.reasons


def test_shuffled_labels_are_refused(split):
    data, fit, _, _ = split
    rng = np.random.default_rng(0)
    shuffled = fit.select(np.ones(len(fit.item), bool))
    object.__setattr__(shuffled, "item", rng.permutation(shuffled.item))
    model = build_model("cooc", popularity_prior=0.0).fit(shuffled)
    d = decide(_metrics(model, split), RULES)
    assert d.decision == "fail", d.reasons


def test_clearly_better_challenger_is_promoted_over_champion(split):
    data, fit, cases, ctx = split
    metrics = _metrics(build_model("cooc").fit(fit), split)
    metrics["champion"] = evaluate_model(RandomModel(data.n_items, seed=1), cases, ctx)
    d = decide(metrics, RULES)
    assert d.decision == "pass" and d.promote, d.reasons
