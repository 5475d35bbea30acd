"""The text-vector cache: each distinct non-blank text costs one forward pass, once."""

from __future__ import annotations

import numpy as np

from recsys.config import PACKAGED_TEXT_MODEL
from recsys.text.encoder import TextEncoder, encode_with_cache


class CountingEncoder:
    """The packaged MiniLM, recording every batch of texts it is asked to encode."""

    calls: list[list[str]] = []

    def __init__(self):
        self.inner = TextEncoder(PACKAGED_TEXT_MODEL, batch_size=8, max_length=16, device="cpu")

    def encode(self, texts, progress=True):
        CountingEncoder.calls.append(list(texts))
        return self.inner.encode(texts, progress=False)


def test_cache_encodes_distinct_texts_once_and_blank_texts_never(tmp_path):
    CountingEncoder.calls = []
    cache = tmp_path / "cache"
    texts = ["red pen", "blue ink", "red pen", "", "   "]

    first, stats = encode_with_cache(texts, cache, PACKAGED_TEXT_MODEL, CountingEncoder, progress=False)

    assert sorted(CountingEncoder.calls[0]) == ["blue ink", "red pen"] and len(CountingEncoder.calls) == 1
    assert stats == {"texts": 5, "encoded": 2, "cached": 1, "blank": 2, "deferred": 0, "dim": 384}
    assert np.array_equal(first[0], first[2]) and not np.allclose(first[0], first[1])
    assert np.allclose(np.linalg.norm(first[:2], axis=1), 1.0, atol=1e-5)
    assert not first[3:].any()

    second, stats = encode_with_cache(["blue ink", "green pad", "red pen"], cache, PACKAGED_TEXT_MODEL, CountingEncoder, progress=False)

    assert CountingEncoder.calls[1:] == [["green pad"]]
    assert (stats["encoded"], stats["cached"]) == (1, 2)
    assert np.array_equal(second[0], first[1]) and np.array_equal(second[2], first[0])

    encode_with_cache(["red pen", "green pad"], cache, PACKAGED_TEXT_MODEL, CountingEncoder, progress=False)
    assert len(CountingEncoder.calls) == 2  # all cached: the model is not even loaded


def test_a_spent_budget_defers_the_least_important_texts_to_the_next_night(tmp_path):
    CountingEncoder.calls = []
    cache = tmp_path / "cache"
    texts = ["tent", "stove", "lamp", "tent", "mug"]
    # most important first: mug, lamp, then the rest; chunks of two; the budget is spent at once
    order = np.array([4, 2, 0, 1, 3])

    first, stats = encode_with_cache(texts, cache, PACKAGED_TEXT_MODEL, CountingEncoder, progress=False,
                                     budget_seconds=1e-9, priority=order, chunk=2)

    assert CountingEncoder.calls == [["mug", "lamp"]]  # one chunk always goes through
    assert (stats["encoded"], stats["deferred"], stats["cached"]) == (2, 2, 0)
    assert first[[2, 4]].any(axis=1).all() and not first[[0, 1, 3]].any()  # deferred rows are zero tonight

    second, stats = encode_with_cache(texts, cache, PACKAGED_TEXT_MODEL, CountingEncoder, progress=False)

    assert CountingEncoder.calls[1:] == [["tent", "stove"]]  # the next night encodes only what was left
    assert (stats["encoded"], stats["deferred"], stats["cached"]) == (2, 0, 3)
    assert np.array_equal(second[[2, 4]], first[[2, 4]]) and second.any(axis=1).all()


def test_new_items_then_the_most_used_get_their_text_first(tmp_path):
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from recsys import schema as S
    from recsys.lake import Lake
    from recsys.pipeline.stages import _text_priority

    lake, day = Lake(tmp_path), dt.date(2026, 11, 27)
    stats = lake.features(day) / "item_stats"
    stats.mkdir(parents=True)
    # item 0: old, 5 users; 1: new, no users yet; 2: old, 40 users; 3: old, unseen (null users)
    pq.write_table(pa.table({S.ITEM_IDX: [0, 1, 2, 3], S.AGE_DAYS: [300, 2, 90, 500],
                             S.N_USERS: pa.array([5, None, 40, None], pa.int64())}), stats / "part-0.parquet")
    idx = np.array([3, 2, 1, 0])  # the texts' items, in catalogue order
    assert idx[_text_priority(lake, day, idx)].tolist() == [1, 2, 0, 3]
