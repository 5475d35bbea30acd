"""The served blend: gain-weighted NDCG by hand, weights chosen for what the cases reward, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.evaluate.protocol import EvalCases
from recsys.models import build_model, load_model
from recsys.models.mtrl.blend import (
    Blend, RewardNDCG, bucket_of, choose_blend, combine, one_se_choice, popularity_log, reward_ndcg, target_gains,
)
from recsys.scoring import is_factorised
from tests.test_mtrl_model import funnel_data, one_thread  # noqa: F401 - one_thread: autouse fixture

VIEW, CLICK, CART, BUY = range(4)
REWARDS = (0.0, 0.2, 0.5, 1.0, 0.0)
N_ITEMS = 40


def test_reward_ndcg_by_hand():
    top = np.array([[7, 3, 9], [1, 2, 4]])
    targets = [np.array([3, 7]), np.array([5])]
    gains = [np.array([1.0, 0.1]), np.array([1.0])]
    # user 0: 0.1 at rank 1, 1.0 at rank 2 -> (0.1 + 1/log2(3)) / (1 + 0.1/log2(3)); user 1: no hit
    expected = (0.1 + 1 / np.log2(3)) / (1 + 0.1 / np.log2(3))
    np.testing.assert_allclose(reward_ndcg(top, targets, gains), [expected, 0.0])
    # equal gains: plain NDCG@3
    np.testing.assert_allclose(reward_ndcg(top, targets, [np.ones(2), np.ones(1)])[0], 1.0)
    # the same rankings for chosen users of the cases (the prior's buckets): user 0 alone
    np.testing.assert_allclose(RewardNDCG(targets, gains, 3)(top[:1], np.array([0])), [expected])
    np.testing.assert_allclose(RewardNDCG(targets, gains, 3)(top[[0, 0]], np.array([1, 0])), [0.0, expected])


def test_target_gains_use_the_reward_of_the_deepest_behaviour_with_a_floor():
    cases = EvalCases(np.arange(1), [np.array([0])], [np.array([4, 5, 6])], [np.array([0])], [np.array([VIEW, CART, BUY])])
    np.testing.assert_allclose(target_gains(cases, REWARDS, 0.1)[0], [0.1, 0.5, 1.0])


def _cases(n_users: int, lengths, targets, events) -> EvalCases:
    hist = [np.arange(n) % 5 for n in lengths]  # items 0-4 are history only, never targets
    return EvalCases(np.arange(n_users), hist, targets, [np.unique(h) for h in hist], events)


def test_the_behaviour_heads_weight_is_chosen_when_purchases_count_most():
    """The ranking head puts ten viewed-only targets first and the bought target 11th; the buy
    head knows the bought one. With purchases worth 10x a view the blend must take the buy
    head; with every behaviour worth the same, lifting the bought item only swaps one hit for
    another (ten hits in the top ten either way), so the weight stays 0."""
    rng = np.random.default_rng(0)
    n = 30
    rank = np.zeros((n, N_ITEMS), np.float32)
    buy = np.full((n, N_ITEMS), -5.0, np.float32)
    targets = []
    for u in range(n):
        order = 5 + rng.permutation(N_ITEMS - 5)  # items 0-4 are the history
        rank[u, order] = -np.arange(len(order), dtype=np.float32)
        buy[u, order[10]] = 0.0
        targets.append(order[:11])
    events = [np.array([VIEW] * 10 + [BUY])] * n
    cases = _cases(n, [8] * n, targets, events)

    blend = choose_blend({"rank": rank, "buy": buy}, cases, target_gains(cases, REWARDS, 0.1), None, None)
    assert blend.buy > 0
    assert blend.chosen_on["final"] > blend.chosen_on["grids"]["buy"]["0"]
    flat = choose_blend({"rank": rank, "buy": buy}, cases, target_gains(cases, (1.0,) * 5, 0.0), None, None)
    assert flat.buy == 0.0


def test_the_prior_weight_is_chosen_per_history_length():
    """Users with 1-2 steps have a popular item as target, which only the prior knows; users with
    long histories have the ranking head's first item as target. The prior must weigh in for
    the short bucket and stay 0 for the long one."""
    rng = np.random.default_rng(1)
    n = 120
    lengths = np.where(np.arange(n) < 60, 1 + np.arange(n) % 2, 20)  # 60 >= MIN_BUCKET_USERS each
    popular = 7
    rank = rng.normal(0, 1, (n, N_ITEMS)).astype(np.float32)
    liked = 10 + rng.integers(0, 30, n)
    rank[np.arange(n), liked] = 6.0
    rank[:, popular] = -3.0
    targets = [np.array([popular]) if lengths[u] <= 2 else np.array([liked[u]]) for u in range(n)]
    counts = np.ones(N_ITEMS)
    counts[popular] = 1000
    cases = _cases(n, lengths, targets, [np.array([BUY])] * n)
    blend = choose_blend({"rank": rank}, cases, target_gains(cases, REWARDS, 0.1), None, popularity_log(counts))
    short, long_ = bucket_of([1])[0], bucket_of([20])[0]
    assert blend.pop[short] > 0 and blend.pop[long_] == 0.0
    assert blend.chosen_on["final"] == pytest.approx(1.0)


def test_a_larger_weight_serves_only_when_it_wins_by_more_than_one_paired_standard_error():
    """Weight 1 gains three users' hits and loses two among 200: one hit ahead, inside the
    noise, so the smaller weight stays. Weight 2 gains forty: far outside it, so it is taken."""
    base = np.zeros(200)
    base[:50] = 1.0
    one_more = base.copy()
    one_more[[60, 61, 62]], one_more[[0, 1]] = 1.0, 0.0
    assert one_se_choice({0.0: base, 1.0: one_more}) == 0.0
    many_more = base.copy()
    many_more[60:100] = 1.0
    assert one_se_choice({0.0: base, 1.0: one_more, 2.0: many_more}) == 2.0
    # Within one standard error of the best, the smallest such weight: 1 is level with 2 here.
    level = many_more.copy()
    level[[150, 151, 152]], level[[60, 61]] = 1.0, 0.0
    assert one_se_choice({0.0: base, 1.0: many_more, 2.0: level}) == 1.0


def test_a_bucket_with_few_users_borrows_the_next_longer_ones_for_its_choice():
    from recsys.models.mtrl.blend import MIN_BUCKET_USERS, _choice_users

    buckets = np.array([0] * 3 + [1] * (MIN_BUCKET_USERS - 10) + [2] * 20 + [3] * 100)
    np.testing.assert_array_equal(_choice_users(buckets, 0), buckets <= 2)  # 3 + 40 < 50 <= 3 + 40 + 20
    np.testing.assert_array_equal(_choice_users(buckets, 3), buckets == 3)
    np.testing.assert_array_equal(_choice_users(np.array([0, 0, 1]), 0), np.array([True, True, True]))  # all there is


def test_combine_is_the_weighted_sum_of_the_parts():
    rng = np.random.default_rng(2)
    parts = {k: rng.normal(size=(2, 6)).astype(np.float32) for k in ("rank", "q", "buy")}
    memory, prior = rng.normal(size=(2, 6)).astype(np.float32), rng.normal(size=5).astype(np.float32)
    blend = Blend(memory=2.0, q=0.5, buy=1.0, pop=(1.0, 0.0, 0.0, 0.25))
    lengths = np.array([1, 30])
    padded = np.append(prior, prior.min())  # the item newer than the prior: as rare as its rarest
    expected = parts["rank"] + 0.5 * parts["q"] + parts["buy"] + 2.0 * memory + np.array([[1.0], [0.25]]) * padded
    np.testing.assert_allclose(combine(parts, blend, lengths, memory, prior), expected, rtol=1e-6)


def test_fit_records_the_blend_and_serves_it_after_save_and_load(tmp_path):
    data = funnel_data()
    hist = [np.array([0, 1, 2]), np.array([5])]
    events = [np.array([VIEW, CLICK, BUY]), np.array([CART])]
    valid = EvalCases(np.arange(12), [np.array([(s + j) % 12 for j in range(3)]) for s in range(12)],
                      [np.array([(s + 3) % 12]) for s in range(12)], [np.arange(0)] * 12, [np.array([BUY])] * 12)  # fmt: skip
    model = build_model("mtrl", max_len=6, d=16, max_epochs=1, memory_weight=0.0).fit(data, valid)
    assert set(model.meta["blend"]["chosen_on"]["grids"]) == {"q", "buy", "pop[1]"}  # 3-step histories: bucket 1
    # force every term on, so the test does not depend on what this tiny run chose
    model.blend = Blend(memory=0.0, q=0.5, buy=1.0, pop=(1.0, 1.0, 1.0, 1.0))
    assert not is_factorised(model)
    scores = model.score(hist, events)
    assert not np.array_equal(scores, model.score(hist))  # the behaviours change the state
    assert not np.array_equal(scores, model.network_only().score(hist, events))
    model.meta["blend"] = model.blend.to_dict()
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    assert again.blend.to_dict() == model.blend.to_dict()
    np.testing.assert_allclose(again.score(hist, events), scores, rtol=1e-5, atol=1e-5)
    assert is_factorised(again.network_only())


def test_reasons_in_blocks_name_the_same_history_item_as_the_per_user_explanation():
    from recsys.scoring import explain_by_vectors

    model = build_model("mtrl", max_len=6, d=16, max_epochs=1, memory_weight=0.0).fit(funnel_data())
    hist = [np.array([0, 1, 2]), np.array([5, 9]), np.array([], np.int64)]
    items = np.array([[3, 4, 7], [10, 11, 0], [1, 2, 3]])
    because = explain_by_vectors(model.explain_vectors(), hist, items, block_users=2)
    for u in range(2):
        assert [f"because of {i}" for i in because[u]] == model.explain(hist[u], items[u])
    assert (because[2] == -1).all()  # no history: no reason from it


@pytest.mark.parametrize("shortlist", [2, 5, 12])
def test_the_shortlisted_top_k_is_the_whole_catalogue_top_k(monkeypatch, shortlist):
    """Random parts, memory and prior over 200 items: every candidate blend's top 10 from the
    shortlists (proven by the bound, or ranked in full where it cannot be) is the one ranking
    the whole catalogue gives, and so is the choice; short lists force the fallback often."""
    import recsys.models.mtrl.blend as blend_module

    rng = np.random.default_rng(3)
    n, width = 60, 200
    parts = {name: rng.normal(size=(n, width)).astype(np.float32) for name in ("rank", "q", "buy")}
    memory_log = np.where(rng.random((n, width)) < 0.05, rng.normal(size=(n, width)), -13.8).astype(np.float32)
    pop_log = popularity_log(rng.integers(0, 50, width - 20))  # 20 items newer than the prior
    lengths = rng.integers(1, 15, n)
    hist = [rng.choice(width, size=ln, replace=False) for ln in lengths]
    targets = [rng.choice(width, size=3, replace=False) for _ in range(n)]
    cases = EvalCases(np.arange(n), hist, targets, [np.unique(h) for h in hist], [np.array([VIEW, CLICK, BUY])] * n)
    seen = blend_module.seen_mask(cases, width)

    monkeypatch.setattr(blend_module, "SHORTLIST", shortlist)
    ranked = blend_module.ServedTopK(parts, memory_log, pop_log, seen, lengths, 10)
    assert not ranked.exact
    for b in (Blend(), Blend(memory=2.0, q=0.5, buy=1.0, pop=(8.0, 1.0, 0.25, 0.0)), Blend(pop=(4.0,) * 4)):
        whole = blend_module.top_of(combine(parts, b, lengths, memory_log, pop_log), seen, 10)
        np.testing.assert_array_equal(ranked(b), whole)
    gains = target_gains(cases, REWARDS, 0.1)
    chosen = choose_blend(parts, cases, gains, memory_log, pop_log)
    monkeypatch.setattr(blend_module, "SHORTLIST", width)  # one list holds the catalogue: ranked in full
    assert blend_module.ServedTopK(parts, memory_log, pop_log, seen, lengths, 10).exact
    assert choose_blend(parts, cases, gains, memory_log, pop_log) == chosen
