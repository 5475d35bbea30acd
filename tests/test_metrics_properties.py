"""Invariants of the ranking metrics, checked on generated inputs."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.evaluate.metrics import METRICS, auc, hit_matrix, intra_list_diversity, log_loss, novelty, ranking_report

lists = st.integers(1, 12).flatmap(
    lambda users: st.tuples(
        st.lists(st.permutations(list(range(20))).map(lambda p: p[:5]), min_size=users, max_size=users),
        st.lists(st.sets(st.integers(0, 19), min_size=1, max_size=4), min_size=users, max_size=users),
    )
)


@settings(max_examples=60, deadline=None)
@given(lists)
def test_bounds_and_user_permutation(case):
    top, targets = np.array(case[0]), [np.array(sorted(t)) for t in case[1]]
    r = ranking_report(top, targets, ks=(5,))
    assert all(0.0 <= v <= 1.0 for v in r.values())
    perm = np.random.default_rng(0).permutation(len(targets))
    r2 = ranking_report(top[perm], [targets[i] for i in perm], ks=(5,))
    for key in r:
        assert abs(r[key] - r2[key]) < 1e-12


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sets(st.integers(0, 30), min_size=1, max_size=5), min_size=1, max_size=8))
def test_perfect_ranking_is_one(target_sets):
    targets = [np.array(sorted(t)) for t in target_sets]
    k = 5
    top = np.array([list(t[:k]) + [100 + j for j in range(k - len(t[:k]))] for t in targets])
    hits, n = hit_matrix(top, targets)
    assert abs(METRICS["ndcg"](hits, n) - 1.0) < 1e-12
    assert abs(METRICS["hr"](hits, n) - 1.0) < 1e-12
    assert abs(METRICS["mrr"](hits, n) - 1.0) < 1e-12


def test_auc_and_log_loss_hand_values():
    assert auc(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0])) == 0.75
    assert auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5
    assert abs(log_loss(np.array([0.5, 0.5]), np.array([1, 0])) - np.log(2)) < 1e-9


def test_diversity_and_novelty():
    cats = np.eye(3)[[0, 0, 1, 2]]  # items 0,1 share a category
    assert intra_list_diversity(np.array([[0, 1]]), cats) == 0.0
    assert intra_list_diversity(np.array([[0, 2]]), cats) == 1.0
    pop = np.array([8.0, 4.0, 2.0, 1.0])
    assert novelty(np.array([[0]]), pop) == 0.0
    assert novelty(np.array([[3]]), pop) == 3.0
