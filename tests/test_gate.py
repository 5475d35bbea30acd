from recsys.evaluate.gate import GateRules, decide

RULES = GateRules(tolerance=0.02, margin_vs_popularity=0.0, min_coverage=0.01, segment_tolerance=0.10)


def _m(ndcg, cov=0.2):
    return {"ndcg@10": ndcg, "coverage@10": cov, "nan_scores": 0}


def test_better_challenger_passes():
    d = decide({"challenger": _m(0.30), "champion": _m(0.25), "popularity": _m(0.10)}, RULES)
    assert d.decision == "pass" and d.promote


def test_worse_than_champion_fails_with_reason():
    d = decide({"challenger": _m(0.20), "champion": _m(0.25), "popularity": _m(0.10)}, RULES)
    assert d.decision == "fail" and not d.promote
    assert any("champion" in r and "<" in r for r in d.reasons)


def test_worse_than_popularity_fails_even_without_champion():
    d = decide({"challenger": _m(0.05), "popularity": _m(0.10)}, RULES)
    assert d.decision == "fail"


def test_low_coverage_fails():
    d = decide({"challenger": _m(0.30, cov=0.001), "popularity": _m(0.10)}, RULES)
    assert d.decision == "fail" and any("coverage" in r for r in d.reasons)


def test_force_promotes_and_says_so():
    d = decide({"challenger": _m(0.05), "popularity": _m(0.10)}, RULES, force=True)
    assert d.decision == "forced" and d.promote and "forced" in d.reasons[0]


def test_segment_collapse_fails():
    ch = dict(_m(0.30), **{"short_history_ndcg@10": 0.05})
    champ = dict(_m(0.25), **{"short_history_ndcg@10": 0.20})
    d = decide({"challenger": ch, "champion": champ, "popularity": _m(0.10)}, RULES)
    assert d.decision == "fail" and any("short_history" in r for r in d.reasons)
