"""The ranking routine (fast factorised path and fallback), exclusions, MMR, cold start, reasons,
similar items, and the scorer's Parquet as the publisher reads it."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys import schema as S
from recsys import scoring
from recsys.data.interactions import Interactions
from recsys.lake import Lake
from recsys.models import build_model
from recsys.scoring import Ranking, explain_factorised, is_factorised, rank_users, top_k
from recsys.serve.batch import NEW_FOR_YOU, POPULAR, score_all_users
from recsys.serve.similar import cosine_neighbours, similar_items, sparse_neighbours


class Factorised:
    """score = mean of the history's item vectors . item vector (a tiny factorised model)."""

    kind = "test-factorised"

    def __init__(self, n_items: int, dim: int = 8, seed: int = 0):
        self.v = np.random.default_rng(seed).standard_normal((n_items, dim)).astype(np.float32)

    def user_vectors(self, histories):
        out = np.zeros((len(histories), self.v.shape[1]), dtype=np.float32)
        for r, h in enumerate(histories):
            h = np.asarray(h, dtype=np.int64)
            h = h[h < len(self.v)]
            if len(h):
                out[r] = self.v[h].mean(axis=0)
        return out

    def item_vectors(self):
        return self.v

    def score(self, histories):
        return self.user_vectors(histories) @ self.v.T

    def explain(self, history, items):
        return ["popular"] * len(items)


class ScoreOnly:
    """The same model without its vectors: forces the fallback path."""

    def __init__(self, model):
        self.model = model

    def score(self, histories):
        return self.model.score(histories)


def _histories(n_users: int, n_items: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n_items, rng.integers(1, 6)) for _ in range(n_users)]


# --------------------------------------------------------------------------- ranking routine


@pytest.mark.parametrize("block_users", [1, 7, 1024])
def test_fast_path_equals_fallback(block_users):
    model = Factorised(60)
    hist = _histories(25, 60)
    excl = [np.unique(h) for h in hist]
    blocked = np.zeros(60, bool)
    blocked[[3, 10, 59]] = True
    assert is_factorised(model) and not is_factorised(ScoreOnly(model))
    fast = rank_users(model, hist, 10, exclude=excl, blocked=blocked, block_users=block_users)
    slow = rank_users(ScoreOnly(model), hist, 10, exclude=excl, blocked=blocked, block_users=block_users)
    np.testing.assert_array_equal(fast.items, slow.items)
    np.testing.assert_allclose(fast.scores, slow.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fast.candidates, slow.candidates)
    # and both are the exact top-10 of the masked score matrix
    s = model.score(hist)
    s[:, blocked] = -np.inf
    for u, e in enumerate(excl):
        s[u, e] = -np.inf
    np.testing.assert_array_equal(fast.items, np.argsort(-s, axis=1, kind="stable")[:, :10])


def test_a_huge_catalogue_is_ranked_in_smaller_blocks_with_the_same_lists(monkeypatch):
    model = Factorised(60)
    hist = _histories(25, 60)
    excl = [np.unique(h) for h in hist]
    whole = rank_users(ScoreOnly(model), hist, 10, exclude=excl, block_users=1024)
    sizes = []

    class Counted(ScoreOnly):
        def score(self, histories):
            sizes.append(len(histories))
            return super().score(histories)

    # room for 7 users' scores of 60 items: the one-user call learns the width, then blocks of 7
    monkeypatch.setattr(scoring, "BLOCK_BYTES", 4 * 60 * 7 + 3)
    for ranked in (rank_users(Counted(model), hist, 10, exclude=excl, block_users=1024),
                   rank_users(model, hist, 10, exclude=excl, block_users=1024)):
        np.testing.assert_array_equal(ranked.items, whole.items)
        np.testing.assert_allclose(ranked.scores, whole.scores, rtol=1e-5, atol=1e-6)
    assert sizes == [1, 7, 7, 7, 4]

    # The fast path asks for user vectors a whole number of blocks at a time (VECTOR_USERS), not
    # once a block: a model's per-call cost (the mtrl item table) is paid per chunk.
    asked = []

    class Vectors(Factorised):
        def user_vectors(self, histories):
            asked.append(len(histories))
            return super().user_vectors(histories)

    monkeypatch.setattr(scoring, "VECTOR_USERS", 15)
    ranked = rank_users(Vectors(60), hist, 10, exclude=excl, block_users=1024)
    np.testing.assert_array_equal(ranked.items, whole.items)
    assert asked == [14, 11]


def test_exclusions_and_unavailable_items_never_appear_and_short_lists_end_in_minus_inf():
    model = Factorised(12)
    hist = [np.array([0, 1, 2]), np.array([5]), np.array([], dtype=np.int64)]
    excl = [np.array([0, 1, 2, 3]), np.array([5, 6]), np.array([], dtype=np.int64)]
    blocked = np.zeros(12, bool)
    blocked[[4, 7, 8, 9, 10]] = True  # 7 allowed: 0 1 2 3 5 6 11
    for m in (model, ScoreOnly(model)):
        r = rank_users(m, hist, 5, exclude=excl, blocked=blocked)
        assert r.candidates.tolist() == [3, 5, 7]
        assert r.lengths.tolist() == [3, 5, 5]
        assert r.expected_rows() == 13
        for u in range(3):
            got = r.items[u][np.isfinite(r.scores[u])]
            assert not np.isin(got, excl[u]).any() and not blocked[got].any()
            assert len(set(got.tolist())) == len(got)
        assert np.all(np.isneginf(r.scores[0, 3:]))
        assert np.all(np.diff(r.scores[np.isfinite(r.scores).all(axis=1)], axis=1) <= 0)


def test_nan_and_inf_scores_are_never_recommended():
    class Broken:
        def score(self, histories):
            s = np.tile(np.linspace(1, 0, 10, dtype=np.float32), (len(histories), 1))
            s[:, 0], s[:, 1], s[:, 2] = np.nan, np.inf, -np.inf
            return s

    r = rank_users(Broken(), [np.array([1])] * 2, 9)
    assert r.lengths.tolist() == [7, 7]
    assert not np.isin(r.items[:, :7], [0, 1, 2]).any()
    assert np.isfinite(r.scores[:, :7]).all()


@pytest.mark.parametrize("width", [4 * 3 * scoring.TOP_RUN, 4 * 3 * scoring.TOP_RUN + 7, 13 * scoring.TOP_RUN + 31])
def test_top_k_rows_gives_torch_topk_values_from_the_runs_with_the_largest_maxima(width):
    """Values from a handful of integers, so many ties cross the k-th place; rows with fewer
    finite values than k, a NaN and a +inf among them; widths with and without a partial run."""
    import torch

    rng = np.random.default_rng(0)
    s = rng.integers(0, 12, (40, width)).astype(np.float32)
    s[1:4] = -np.inf
    s[1, rng.choice(width, 2, replace=False)] = 5.0  # two finite values for k = 3
    s[2, width - 1] = 11.0  # only the partial run (or the last full one) holds a value
    s[5, 3], s[6, width - 2] = np.nan, np.inf
    s[7] = 0.0
    s[8, :] = 0.0
    s[8, ::scoring.TOP_RUN] = 1.0  # one value above the rest in every run
    block = torch.from_numpy(s)
    for k in (1, 3):
        want_vals, _ = torch.topk(block, k, dim=1)
        vals, cols = scoring.top_k_rows(block, k)
        np.testing.assert_array_equal(vals.numpy(), want_vals.numpy())
        np.testing.assert_array_equal(block.gather(1, cols).numpy(), vals.numpy())  # the columns hold them
        assert all(len(set(row)) == k for row in cols.tolist())
    assert scoring.top_k_rows(block, 3)[1][2, 0] == width - 1


def test_k_larger_than_the_catalogue():
    items, scores = top_k(Factorised(4), [np.array([0])], 6, exclude=[np.array([0])])
    assert np.isfinite(scores[0]).sum() == 3 and sorted(items[0, :3].tolist()) == [1, 2, 3]


def test_mmr_changes_order_only_when_lambda_is_positive():
    # Items 0..5 in category 0 score highest, 6..11 in category 1 lower.
    class Fixed:
        def score(self, histories):
            return np.tile(np.linspace(2, 1, 12, dtype=np.float32), (len(histories), 1))

    category = np.array([0] * 6 + [1] * 6)
    plain = rank_users(Fixed(), [np.array([0])], 4)
    off = rank_users(Fixed(), [np.array([0])], 4, diversity_lambda=0.0, category=category)
    on = rank_users(Fixed(), [np.array([0])], 4, diversity_lambda=0.7, category=category)
    np.testing.assert_array_equal(off.items, plain.items)
    assert plain.items[0].tolist() == [0, 1, 2, 3]
    # MMR with category similarity (1 same, 0 other): the best item of category 1 jumps to second;
    # once both categories are in, relevance decides again.
    assert on.items[0].tolist() == [0, 6, 1, 2]
    # the scores stay the model's
    assert on.scores[0].tolist() == pytest.approx(Fixed().score([0])[0, [0, 6, 1, 2]].tolist())
    weak = rank_users(Fixed(), [np.array([0])], 4, diversity_lambda=0.05, category=category)
    np.testing.assert_array_equal(weak.items, plain.items)  # too weak to beat the score gap


def test_mmr_respects_exclusions_and_short_lists():
    class Fixed:
        def score(self, histories):
            return np.tile(np.linspace(2, 1, 6, dtype=np.float32), (len(histories), 1))

    r = rank_users(Fixed(), [np.array([0])], 5, exclude=[np.array([0, 1, 2])], diversity_lambda=0.5,
                   category=np.array([0, 0, 1, 1, 2, 2]))
    valid = r.items[0][np.isfinite(r.scores[0])]
    assert sorted(valid.tolist()) == [3, 4, 5] and len(valid) == 3


def test_explain_factorised_names_the_closest_history_item():
    model = Factorised(5, dim=3)
    model.v = np.eye(5, 3, dtype=np.float32) + np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0], [0.9, 0, 0], [0, 0.9, 0]],
                                                      dtype=np.float32)
    because = explain_factorised(model, [np.array([0, 1]), np.array([], dtype=np.int64)], np.array([[3, 4], [3, 4]]))
    assert because.tolist() == [[0, 1], [-1, -1]]


# --------------------------------------------------------------------------- similar items


def test_cosine_neighbours_exclude_the_item_itself_and_blocked_items():
    v = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0, 0], [1, 0.05]], dtype=np.float32)
    blocked = np.zeros(6, bool)
    blocked[5] = True
    items, scores = cosine_neighbours(v, 2, blocked)
    for i in range(6):
        got = items[i][np.isfinite(scores[i])]
        assert i not in got and 5 not in got and 4 not in got  # never itself, blocked or vector-less
    assert items[0, 0] == 1 and items[2, 0] == 3
    assert np.isneginf(scores[4]).all()  # no vector, no list


def test_sparse_neighbours_from_the_cooccurrence_matrix():
    seqs = [[0, 1, 2]] * 4 + [[3, 4]] * 2
    user = np.concatenate([np.full(len(s), u) for u, s in enumerate(seqs)]).astype(np.int32)
    item = np.concatenate(seqs).astype(np.int32)
    n = len(item)
    data = Interactions(np.array([f"u{u}" for u in range(len(seqs))]), user, item, np.zeros(n, np.int8),
                        np.arange(n, dtype=np.int64), np.full(n, np.nan, np.float32), np.zeros(n, np.int8), 6)
    model = build_model("cooc").fit(data)
    found = similar_items(model, 3)
    assert found.source == "co-occurrence"
    assert set(found.items[0][np.isfinite(found.scores[0])]) == {1, 2}
    assert found.items[3][np.isfinite(found.scores[3])].tolist() == [4]
    assert np.isneginf(found.scores[5]).all()
    for i in range(6):
        assert i not in found.items[i][np.isfinite(found.scores[i])]
    blocked = np.zeros(6, bool)
    blocked[1] = True
    items, scores = sparse_neighbours(model.sim, 3, blocked)
    assert items[0][np.isfinite(scores[0])].tolist() == [2]


def test_similar_items_prefers_item_vectors_then_text():
    assert similar_items(Factorised(10), 3).source == "item vectors"
    assert similar_items(build_model("popularity"), 3) is None
    text = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    assert similar_items(build_model("popularity"), 3, text_vectors=text).source == "text vectors"


# --------------------------------------------------------------------------- the scorer on a small lake

DS = dt.date(2026, 11, 27)
N_ITEMS = 12
# The most popular items 0, 2 and 3 share a category.
CATEGORIES = ["shoes", "hats", "shoes", "shoes", "hats", "bags", "bags", "hats", "bags", "hats", "bags", None]


def _ts(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.timezone.utc)


@pytest.fixture
def lake(tmp_path):
    """Hand-made feature outputs: 12 items in 3 categories (item 9 unavailable, item 11 new, no category),
    six users; u5's only event on ds is on an item the features do not know (cold start)."""
    lake = Lake(tmp_path / "lake")
    feats = lake.features(DS)
    old = dt.date(2026, 10, 1)
    items = pa.table({
        S.ITEM_ID: [f"item{i:02d}" for i in range(N_ITEMS)],
        S.ITEM_IDX: pa.array(range(N_ITEMS), pa.int32()),
        S.CATEGORY: CATEGORIES,
        S.AVAILABLE: [i != 9 for i in range(N_ITEMS)],
        S.CREATED_AT: pa.array([_ts(DS if i == 11 else old, 0) for i in range(N_ITEMS)], pa.timestamp("us", tz="UTC")),
    })
    stats = pa.table({S.ITEM_IDX: pa.array(range(N_ITEMS), pa.int32()),
                      "age_days": pa.array([0 if i == 11 else 57 for i in range(N_ITEMS)], pa.int32())})
    # (user, item, event) in time order; purchases are excluded by default.
    log = [
        ("u0", 0, "view"), ("u0", 1, "view"), ("u0", 1, "purchase"), ("u0", 2, "view"),
        ("u1", 0, "view"), ("u1", 1, "view"), ("u1", 2, "view"), ("u1", 3, "click"),
        ("u2", 4, "view"), ("u2", 5, "view"), ("u2", 6, "purchase"),
        ("u3", 6, "view"), ("u3", 7, "view"), ("u3", 8, "view"), ("u3", 9, "view"), ("u3", 11, "view"),
        ("u4", 0, "view"), ("u4", 2, "cart"), ("u4", 3, "view"),
    ]
    events = pa.table({
        S.USER_ID: [u for u, _, _ in log],
        S.ITEM_IDX: pa.array([i for _, i, _ in log], pa.int32()),
        S.EVENT_TYPE: [e for _, _, e in log],
        S.TS: pa.array([_ts(DS, 1 + n // 4) for n in range(len(log))], pa.timestamp("us", tz="UTC")),
        S.RATING: pa.array([None] * len(log), pa.float64()),
        S.SPLIT: ["train"] * len(log),
    })
    for name, table in (("items", items), ("item_stats", stats), ("events", events)):
        (feats / name).mkdir(parents=True)
        pq.write_table(table, feats / name / "part-0.parquet")
    validated = lake.validated_events_partition(DS)
    validated.mkdir(parents=True)
    pq.write_table(pa.table({S.USER_ID: ["u0", "u5"], S.ITEM_ID: ["item00", "gone"]}), validated / "part-0.parquet")
    return lake


def _fit(lake, kind="cooc"):
    from recsys.data.interactions import load_interactions

    model = build_model(kind).fit(load_interactions(lake.features(DS), n_items=N_ITEMS))
    path = lake.models_root / kind
    model.save(path)
    return path


def _lists(path):
    rows = pq.read_table(path).to_pylist()
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(r["user_id"], []).append(r)
    return rows, out


def test_scorer_writes_sorted_complete_lists_with_exclusions_filters_and_reasons(lake):
    result = score_all_users(lake, DS, _fit(lake), k=4, similar_k=3)
    rows, lists = _lists(result["path"])
    assert sorted(lists) == ["u0", "u1", "u2", "u3", "u4", "u5"]
    assert [(r["user_id"], r["rank"]) for r in rows] == sorted((r["user_id"], r["rank"]) for r in rows)
    assert result["users"] == 6 and result["rows"] == len(rows) == result["expected_rows"] == 24
    assert result["cold_start_users"] == 1
    for user, lst in lists.items():
        items = [r["item_id"] for r in lst]
        assert [r["rank"] for r in lst] == [1, 2, 3, 4] and len(set(items)) == 4
        assert "item09" not in items  # unavailable
    assert "item01" not in [r["item_id"] for r in lists["u0"]]  # bought
    assert "item06" not in [r["item_id"] for r in lists["u2"]]  # bought
    # u1 followed 0 -> 1 -> 2 -> 3 like u0 and u4: reasons name history items
    assert any(r["reason"].startswith("because of item") for r in lists["u1"])
    # cold start: the popularity fallback, all "popular" (or "new for you")
    assert {r["reason"] for r in lists["u5"]} <= {POPULAR, NEW_FOR_YOU}
    # similar items: never the item itself, never unavailable
    sims = pq.read_table(result["similar_path"]).to_pylist()
    assert result["similar_source"] == "co-occurrence" and sims
    assert all(r["item_id"] != r["similar_item_id"] and r["similar_item_id"] != "item09" for r in sims)


def test_cold_start_users_get_the_most_popular_available_items(lake):
    result = score_all_users(lake, DS, _fit(lake), k=3, similar_k=None)
    _, lists = _lists(result["path"])
    # Distinct users per item: item 0 (u0 u1 u4) and item 2 (u0 u1 u4) lead, then 1 and 3 (two users each).
    assert [r["item_id"] for r in lists["u5"]][:2] in (["item00", "item02"], ["item02", "item00"])
    assert "similar_path" not in result
    # The same list on its own, for users the batch has none for: all "popular", however new an item.
    fallback = pq.read_table(result["fallback_path"]).to_pylist()
    assert [(r["rank"], r["item_id"]) for r in fallback] == [(r["rank"], r["item_id"]) for r in lists["u5"]]
    assert {r["reason"] for r in fallback} == {POPULAR} and result["fallback_rows"] == 3


def test_new_items_say_new_for_you(lake):
    result = score_all_users(lake, DS, _fit(lake), k=11, exclude="none", similar_k=None)
    _, lists = _lists(result["path"])
    reasons = {user: {r["item_id"]: r["reason"] for r in lst} for user, lst in lists.items()}
    assert all("item11" in got for got in reasons.values())  # exclude='none': every available item
    for user, got in reasons.items():
        # u3 viewed item 11: not new to them
        assert (got["item11"] == NEW_FOR_YOU) == (user != "u3"), (user, got["item11"])
        assert list(got.values()).count(NEW_FOR_YOU) == (user != "u3")


def test_exclude_setting(lake):
    seen = score_all_users(lake, DS, _fit(lake), k=11, exclude="seen", similar_k=None)
    _, lists = _lists(seen["path"])
    assert not {"item00", "item01", "item02"} & {r["item_id"] for r in lists["u0"]}
    assert seen["rows"] == seen["expected_rows"]
    none = score_all_users(lake, DS, _fit(lake), k=11, exclude="none", similar_k=None)
    _, lists = _lists(none["path"])
    assert "item01" in {r["item_id"] for r in lists["u0"]}
    assert len(lists["u0"]) == 11  # every available item


def test_diversity_setting_spreads_categories(lake):
    _, a = _lists(score_all_users(lake, DS, _fit(lake, "popularity"), k=3, similar_k=None)["path"])
    mixed = score_all_users(lake, DS, _fit(lake, "popularity"), k=3, diversity_lambda=0.9, similar_k=None)
    _, b = _lists(mixed["path"])
    cat = lambda item: CATEGORIES[int(item[-2:])] or item  # noqa: E731  (no category: its own)
    spread = lambda lists: np.mean([len({cat(r["item_id"]) for r in lst}) for lst in lists.values()])  # noqa: E731
    assert spread(a) < 3 and spread(b) == 3
    assert [r["item_id"] for r in a["u0"]][0] == [r["item_id"] for r in b["u0"]][0] == "item00"


def test_a_factorised_model_takes_the_fast_path_in_the_scorer(lake, monkeypatch):
    import recsys.serve.batch as batch

    model = Factorised(N_ITEMS, seed=3)
    monkeypatch.setattr(batch, "load_model", lambda path: model)
    result = score_all_users(lake, DS, lake.models_root / "x", k=4, similar_k=3)
    rows, lists = _lists(result["path"])
    assert result["fast_path"] and result["rows"] == result["expected_rows"]
    assert result["similar_source"] == "item vectors"
    for user, lst in lists.items():
        if user != "u5":
            assert all(r["reason"].startswith("because of item") or r["reason"] == NEW_FOR_YOU for r in lst)


def test_ranking_dataclass_expected_rows():
    r = Ranking(np.zeros((2, 3), np.int64), np.zeros((2, 3), np.float32), np.array([1, 10]))
    assert r.expected_rows() == 4



def test_bench_score_prints_its_json_last(capsys):
    import json

    from recsys.cli import main

    assert main(["bench", "score", "--users", "300", "--items", "500", "--k", "10", "--repeats", "1",
                 "--block-users", "128"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) == {"model", "users", "items", "k", "seconds", "gemm_bound_seconds", "ratio_vs_gemm_bound"}
    assert (last["users"], last["items"], last["k"]) == (300, 500, 10) and last["ratio_vs_gemm_bound"] > 0
    assert last["model"] == "random-factorised"


def test_bench_score_bounds_a_matrix_too_large_to_hold_in_blocks_of_users(monkeypatch, capsys):
    from recsys.bench import score
    from recsys.cli import main

    monkeypatch.setattr(score, "BOUND_BYTES", 300 * 500)  # (300, 500) float32 is 4x that
    assert main(["bench", "score", "--users", "300", "--items", "500", "--k", "10", "--repeats", "1",
                 "--block-users", "128"]) == 0
    out = capsys.readouterr().out
    assert "bare torch.matmul (U, I), 128 users a call" in out


def test_bench_score_times_a_saved_model_on_its_own_catalogue(tmp_path, capsys):
    import json

    from recsys.cli import main
    from recsys.models import build_model
    from tests.test_mtrl_model import funnel_data

    data = funnel_data()
    build_model("mtrl", max_len=6, d=16, max_epochs=1).fit(data).save(tmp_path / "m")
    assert main(["bench", "score", "--users", "40", "--k", "5", "--repeats", "1", "--model", str(tmp_path / "m")]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (last["model"], last["users"], last["items"]) == (str(tmp_path / "m"), 40, data.n_items)
