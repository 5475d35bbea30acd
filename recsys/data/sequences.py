"""Interactions from in-memory sequences, split leave-one-out (the public-benchmark protocol).

The Spark feature job does this at scale; this small path serves tests and quick experiments.
"""

from __future__ import annotations

import numpy as np

from recsys import schema as S
from recsys.data.interactions import EVENT_CODE, Interactions


def from_sequences(seqs: dict[str, list[int]], n_items: int, events: dict[str, list[str]] | None = None) -> Interactions:
    """user -> time-ordered item_idx list; per user the last item is `test`, the one before `valid`."""
    users = sorted(seqs)
    user, item, event, ts, split = [], [], [], [], []
    train_code, valid_code, test_code = (S.SPLITS.index(s) for s in ("train", "valid", "test"))
    for u, name in enumerate(users):
        s = seqs[name]
        n = len(s)
        user.append(np.full(n, u, np.int32))
        item.append(np.asarray(s, np.int32))
        kinds = (events or {}).get(name) or ["view"] * n
        event.append(np.array([EVENT_CODE[k] for k in kinds], np.int8))
        ts.append(np.arange(n, dtype=np.int64) * 1_000_000)
        sp = np.full(n, train_code, np.int8)
        if n >= 3:
            sp[-1], sp[-2] = test_code, valid_code
        split.append(sp)
    cat = np.concatenate
    n_total = sum(len(x) for x in item)
    return Interactions(
        np.array(users), cat(user), cat(item), cat(event), cat(ts), np.full(n_total, np.nan, np.float32),
        cat(split), n_items,
    )
