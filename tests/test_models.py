"""Baseline models on a hand-made sequence set where the right answer is obvious."""

import numpy as np

from recsys.data.interactions import Interactions
from recsys.models import build_model, load_model
from recsys.scoring import top_k


def _data(seqs: list[list[int]], n_items: int) -> Interactions:
    user = np.concatenate([np.full(len(s), u) for u, s in enumerate(seqs)]).astype(np.int32)
    item = np.concatenate([np.array(s) for s in seqs]).astype(np.int32)
    ts = np.concatenate([np.arange(len(s)) for s in seqs]).astype(np.int64) * 1_000_000
    n = len(item)
    return Interactions(
        np.array([f"u{u}" for u in range(len(seqs))]), user, item, np.zeros(n, np.int8), ts,
        np.full(n, np.nan, np.float32), np.zeros(n, np.int8), n_items,
    )


# 0 -> 1 -> 2 is the common path; 5 is globally popular but never follows 0.
SEQS = [[0, 1, 2]] * 6 + [[5, 6], [5, 7], [5, 8], [5, 9], [5, 3], [5, 4], [5, 6], [5, 7]]


def test_cooc_follows_sequences_and_popularity_does_not():
    data = _data(SEQS, 10)
    cooc = build_model("cooc").fit(data)
    pop = build_model("popularity").fit(data)
    items, _ = top_k(cooc, [np.array([0])], k=2, exclude=[np.array([0])])
    assert items[0, 0] == 1
    items, _ = top_k(pop, [np.array([0])], k=1, exclude=[np.array([0])])
    assert items[0, 0] == 5
    assert cooc.explain(np.array([0]), np.array([1]))[0] == "because of 0"


def test_exclusions_and_blocked_items_never_returned():
    data = _data(SEQS, 10)
    model = build_model("cooc").fit(data)
    blocked = np.zeros(10, bool)
    blocked[1] = True
    items, scores = top_k(model, [np.array([0])] * 3, k=5, exclude=[np.array([2])] * 3, blocked=blocked, block_users=2)
    assert not np.isin(items, [1, 2]).any()
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_save_load_round_trip(tmp_path):
    data = _data(SEQS, 10)
    for kind in ("cooc", "popularity"):
        model = build_model(kind).fit(data)
        model.save(tmp_path / kind)
        again = load_model(tmp_path / kind)
        h = [np.array([0, 1]), np.array([5])]
        np.testing.assert_allclose(model.score(h), again.score(h))
