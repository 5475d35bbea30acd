"""Ranking metrics against values computed by hand on tiny examples."""

import math

import numpy as np
import pytest

from recsys.evaluate.metrics import catalogue_coverage, hit_matrix, paired_difference, ranking_report, standard_error


def test_hand_computed_example():
    # user 0: targets {3}, list [5, 3, 1] -> hit at rank 2
    # user 1: targets {7, 9}, list [9, 2, 7] -> hits at ranks 1 and 3
    # user 2: targets {4}, list [1, 2, 3] -> no hit
    top = np.array([[5, 3, 1], [9, 2, 7], [1, 2, 3]])
    targets = [np.array([3]), np.array([7, 9]), np.array([4])]
    r = ranking_report(top, targets, ks=(3,))
    assert r["hr@3"] == pytest.approx(2 / 3)
    assert r["mrr@3"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert r["recall@3"] == pytest.approx((1 + 1 + 0) / 3)
    assert r["precision@3"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    ndcg0 = (1 / math.log2(3)) / 1.0
    ndcg1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert r["ndcg@3"] == pytest.approx((ndcg0 + ndcg1 + 0) / 3)


def test_perfect_ranking_scores_one():
    top = np.array([[1, 2, 0], [4, 0, 1]])
    r = ranking_report(top, [np.array([1, 2]), np.array([4])], ks=(2,))
    for name in ("hr@2", "ndcg@2", "mrr@2", "recall@2"):
        assert r[name] == pytest.approx(1.0), name


def test_hit_matrix_and_coverage():
    hits, n = hit_matrix(np.array([[1, 2], [3, 4]]), [np.array([2]), np.array([5, 6])])
    assert hits.tolist() == [[0, 1], [0, 0]]
    assert n.tolist() == [1, 2]
    assert catalogue_coverage(np.array([[1, 2], [2, 3]]), 10) == pytest.approx(0.3)


def test_paired_difference_and_standard_errors_by_hand():
    a, b = np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.0, 0.0, 1.0, 0.0])
    diff, se = paired_difference(a, b)
    # differences 1, 0, 0, 1: mean 0.5, sample std sqrt(1/3), over sqrt(4)
    assert diff == pytest.approx(0.5) and se == pytest.approx(math.sqrt(1 / 3) / 2)
    assert standard_error(a) == pytest.approx(0.5 / 2)  # sample std of 1,0,1,1 is 0.5
    # the same users ranked the same way differ by nothing, with no noise
    assert paired_difference(a, a) == (0.0, 0.0)
