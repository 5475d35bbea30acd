"""The mtrl item memory: its distribution, the mixture, its weight in the served blend, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.evaluate.protocol import EvalCases
from recsys.models import build_model, load_model
from recsys.models.mtrl.blend import Blend, choose_blend, target_gains
from recsys.models.mtrl.memory import EPS, ItemMemory
from recsys.scoring import is_factorised
from tests.helpers import assert_top_k_follows_scores
from tests.test_mtrl_model import funnel_data, one_thread  # noqa: F401 - one_thread: autouse fixture


def ring_cases(n_items: int, starts: list[int]) -> EvalCases:
    """Histories start, start+1, start+2 on the ring; the target is the next item on it."""
    hist = [np.array([(s + j) % n_items for j in range(3)]) for s in starts]
    return EvalCases(np.arange(len(starts)), hist, [np.array([(s + 3) % n_items]) for s in starts], [np.unique(h) for h in hist])


def test_distribution_sums_to_one_and_knows_the_ring():
    data = funnel_data()  # every user walks i -> i+1 on a ring of 12 items
    mem = ItemMemory.fit(data)
    p = mem.distribution([np.array([3, 4]), np.array([], np.int64)], data.n_items + 2)
    assert p.shape == (2, data.n_items + 2)
    assert p[0].sum() == pytest.approx(1.0) and p[1].sum() == 0.0  # no history: no evidence
    assert p[0, -2:].sum() == 0.0  # items newer than the memory's log
    assert int(np.argmax(np.where(np.isin(np.arange(len(p[0])), [3, 4]), -1, p[0]))) == 5


def test_an_item_the_memory_never_saw_scores_as_a_typical_item_not_the_floor():
    data = funnel_data(n_items=30)  # a ring long enough for items 5 steps from any history item
    mem = ItemMemory.fit(data.select(data.item != 9))  # item 9 is new to the memory
    hist = [np.array([3, 4]), np.array([], np.int64)]
    m = mem.log_scores(hist, data.n_items + 1)  # and one item newer still
    p = mem.distribution(hist, data.n_items + 1)[0]
    typical = float((p * np.log(p + EPS)).sum())  # minus the entropy of the memory's distribution
    np.testing.assert_allclose(m[0, [9, data.n_items]], typical, rtol=1e-5)
    assert m[0, 5] > typical > m[0, 20] == pytest.approx(np.log(EPS))  # best evidence > unknown > no evidence
    assert not m[1].any()  # no history: no opinion on any item


def test_weight_zero_or_no_evidence_ranks_as_the_network_and_the_memory_moves_the_ranking():
    data = funnel_data()
    mem = ItemMemory.fit(data)
    logits = np.random.default_rng(0).normal(size=(2, data.n_items)).astype(np.float32)
    hist = [np.array([3, 4]), np.array([], np.int64)]
    np.testing.assert_array_equal(np.argsort(-mem.mix(logits, hist, 0.0), axis=1), np.argsort(-logits, axis=1))
    mixed = mem.mix(logits, hist, 2.0)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(mixed, logp + 2.0 * mem.log_scores(hist, data.n_items), rtol=1e-5)
    assert int(np.argmax(mixed[0])) in (5, 6)  # the ring's successors of 4, whatever the logits say
    np.testing.assert_array_equal(np.argsort(-mixed[1]), np.argsort(-logits[1]))  # no history: the network's order


def _choose_memory(scores: np.ndarray, mem: ItemMemory, cases: EvalCases) -> Blend:
    logp = torch.log_softmax(torch.from_numpy(scores), 1).numpy()
    gains = target_gains(cases, (1.0,) * 5, 0.0)
    return choose_blend({"rank": logp}, cases, gains, mem.log_scores(cases.histories, scores.shape[1]), None)


def test_the_weight_is_chosen_on_the_cases_and_zero_wins_where_the_memory_knows_nothing():
    data = funnel_data()
    mem = ItemMemory.fit(data)
    cases = ring_cases(data.n_items, list(range(12)))
    flat = np.zeros((12, data.n_items), np.float32)  # a network with no idea
    blend = _choose_memory(flat, mem, cases)
    table = {float(w): v for w, v in blend.chosen_on["grids"]["memory"].items()}
    assert blend.memory > 0 and table[blend.memory] == max(table.values()) and table[blend.memory] > table[0.0]
    assert blend.chosen_on["final"] == pytest.approx(1.0)  # the ring's successor, first for every case
    # a network that knows the answer and a memory with nothing to say: the network alone
    knows = np.stack([np.eye(data.n_items, dtype=np.float32)[(h[-1] + 1) % data.n_items] * 20 for h in cases.histories])
    empty = ItemMemory.fit(data.select(np.zeros(len(data.item), bool)))
    blend = _choose_memory(knows, empty, cases)
    assert blend.memory == 0.0 and blend.chosen_on["final"] == pytest.approx(1.0)


def test_fit_chooses_the_weight_on_valid_and_it_survives_save_and_load(tmp_path):
    data = funnel_data()
    valid = ring_cases(data.n_items, list(range(12)))
    model = build_model("mtrl", max_len=6, d=16, max_epochs=1).fit(data, valid)
    grid = model.meta["blend"]["chosen_on"]["grids"]["memory"]  # weight -> validation score
    assert set(grid) >= {"0", "1"}
    # the served weight is the one that scored best on the validation cases (the ring's successor
    # is what the memory knows, so some memory beats none)
    assert model.memory is not None and model.memory_weight == float(max(grid, key=grid.get)) > 0.0
    assert grid[str(model.memory_weight).removesuffix(".0")] > grid["0"]
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    hist = [np.array([0, 1, 2]), np.array([5])]
    assert again.memory_weight == model.memory_weight and again.blend.to_dict() == model.blend.to_dict()
    np.testing.assert_array_equal(model.score(hist), again.score(hist))


def test_the_weight_is_chosen_before_the_refit_learns_the_validation_cases():
    data = funnel_data()
    valid = ring_cases(data.n_items, list(range(12)))
    backwards = funnel_data(seed=1)  # walks the ring the other way: a refit on it changes the network
    backwards.item[:] = data.n_items - 1 - backwards.item
    plain = build_model("mtrl", max_len=6, d=16, max_epochs=2, refit_epochs=5).fit(data, valid)
    refit = build_model("mtrl", max_len=6, d=16, max_epochs=2, refit_epochs=5).fit(data, valid, refit_data=backwards)
    assert "refit" in refit.meta
    assert not np.array_equal(refit.network_only().score(valid.histories), plain.network_only().score(valid.histories))
    # the same network (deterministic on the CPU) until the refit: the same validation table
    assert refit.meta["blend"] == plain.meta["blend"]


def test_mixed_scores_leave_the_fast_path_and_network_only_returns_to_it():
    data = funnel_data()
    model = build_model("mtrl", max_len=6, d=16, max_epochs=1, memory_weight=2.0, reward_blend=False).fit(data)
    hist = [np.array([0, 1, 2]), np.array([7, 8])]
    assert model.memory_weight == 2.0 and not is_factorised(model)
    scores = model.score(hist)
    network = model.network_only().score(hist)
    expected = torch.log_softmax(torch.from_numpy(network), 1).numpy() + 2.0 * model.memory.log_scores(hist, data.n_items)
    assert_equal_per_user_up_to_a_constant(scores, expected)
    assert_top_k_follows_scores(model, hist, scores)  # through the slow path
    alone = model.network_only()
    assert is_factorised(alone) and model.memory is not None  # the view leaves the model as it was
    np.testing.assert_allclose(alone.score(hist), alone.user_vectors(hist) @ alone.item_vectors().T, rtol=1e-5, atol=1e-5)
    plain = build_model("mtrl", preset="sasrec_ce", max_len=6, d=16, max_epochs=1).fit(data)
    assert plain.memory is None and is_factorised(plain)


def assert_equal_per_user_up_to_a_constant(got: np.ndarray, expected: np.ndarray) -> None:
    """got - expected is one number per row, to float32 rounding of the values' size."""
    shift = got - expected
    spread = np.abs(shift - shift.mean(axis=1, keepdims=True))
    assert (spread <= 1e-5 * (1.0 + np.abs(expected) + np.abs(got))).all(), spread.max()


def test_the_served_scorer_is_combine_less_a_per_user_constant_in_a_reused_buffer():
    """The scoring routine's general path (Q, memory and prior folded into one matmul, the
    memory's entries added after it, buy in place) orders each user's items as combine over the
    dense parts: the two differ by a constant per user (the ranking head's normaliser and the
    Q term's mean), not per item."""
    from recsys.models.mtrl.blend import combine, network_parts
    from recsys.scoring import rank_users

    data = funnel_data(n_users=60, n_items=30)
    model = build_model("mtrl", max_len=6, d=16, max_epochs=1).fit(data)
    rng = np.random.default_rng(0)
    hist = [rng.integers(0, 30, rng.integers(0, 14)) for _ in range(700)]  # two state blocks, every bucket
    events = [rng.integers(0, 4, len(h)) for h in hist]
    lengths = np.array([len(h) for h in hist])
    narrow = ItemMemory.fit(funnel_data(n_items=25))  # items 25.. are new to it: typical
    blends = [Blend(memory=2.0), Blend(memory=0.5, pop=(1.0, 0.0, 0.25, 4.0)), Blend(q=2.0),
              Blend(memory=1.0, q=0.5, buy=2.0, pop=(0.1, 0.2, 0.5, 0.0)), Blend(pop=(8.0, 0.0, 0.0, 0.1))]
    for blend, memory, prior in [(b, model.memory, model.prior) for b in blends] + [(blends[1], narrow, model.prior[:-4])]:
        view = model.with_blend(blend)
        view.memory, view.prior = (memory if blend.memory > 0 else None), prior
        parts = network_parts(model.net, hist, 0, events)
        memory_log = view.memory.log_scores(hist, data.n_items) if view.memory is not None else None
        expected = combine(parts, blend, lengths, memory_log, prior)
        buffer = torch.full((len(hist) + 5, data.n_items), float("nan"))
        got = view.block_scorer()(hist, events, out=buffer)
        assert got.data_ptr() == buffer.data_ptr()
        assert_equal_per_user_up_to_a_constant(got.numpy(), expected)
        np.testing.assert_array_equal(view.score(hist, events), got.numpy())
        exclude = [np.unique(h) for h in hist]
        ranking = rank_users(view, hist, 5, exclude=exclude, events=events, block_users=300)
        for r, ex in enumerate(exclude):
            s = expected[r].copy()
            s[ex] = -np.inf
            # The items ranked are combine's five best: their combine scores are its top five
            # (an exact tie may be broken either way).
            np.testing.assert_allclose(s[ranking.items[r]], -np.sort(-s)[:5], rtol=1e-5, atol=1e-5)


def test_the_sparse_memory_log_is_the_dense_definition():
    data = funnel_data(n_items=30)
    mem = ItemMemory.fit(data.select(data.item != 9))
    hist = [np.array([3, 4]), np.array([], np.int64), np.array([20, 21, 22, 9])]
    width = data.n_items + 2
    p = mem.distribution(hist, width).astype(np.float64)
    known = np.zeros(width, bool)
    known[: data.n_items] = mem.knn.pop > 0
    expected = np.where(known, np.log(p + EPS), (p * np.log(p + EPS)).sum(axis=1, keepdims=True))
    expected[p.sum(axis=1) == 0] = 0.0
    np.testing.assert_allclose(mem.log_scores(hist, width), expected, rtol=1e-6, atol=1e-6)
    sparse = mem.sparse_log(hist, width)
    assert len(sparse.rows) == int(((p > 0) & known).sum())  # only the entries with mass are held
