"""The feature job's `events` output as numpy arrays, the one shape every model and metric reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads

from recsys import schema as S
from recsys.errors import InputError

EVENT_CODE = {name: i for i, name in enumerate(S.EVENT_TYPES)}


@dataclass(frozen=True)
class Interactions:
    """Time-ordered interactions; row i is (user[i], item[i], event[i], ts[i], split[i])."""

    user_ids: np.ndarray  # (U,) str, the users' external ids; `user` indexes into it
    user: np.ndarray  # (N,) int32
    item: np.ndarray  # (N,) int32, item_idx
    event: np.ndarray  # (N,) int8, index into schema.EVENT_TYPES
    ts: np.ndarray  # (N,) int64 microseconds since epoch
    rating: np.ndarray  # (N,) float32, NaN where absent
    split: np.ndarray  # (N,) int8, index into schema.SPLITS
    n_items: int

    def select(self, mask: np.ndarray) -> "Interactions":
        return Interactions(
            self.user_ids, self.user[mask], self.item[mask], self.event[mask], self.ts[mask],
            self.rating[mask], self.split[mask], self.n_items,
        )

    def in_splits(self, *names: str) -> "Interactions":
        codes = [S.SPLITS.index(n) for n in names]
        return self.select(np.isin(self.split, codes))

    def histories(self) -> dict[int, np.ndarray]:
        """user -> item_idx sequence in time order."""
        return self._per_user(self.item)

    def event_histories(self) -> dict[int, np.ndarray]:
        """user -> the behaviour of each step of `histories()` (schema.EVENT_TYPES index), aligned."""
        return self._per_user(self.event)

    def _per_user(self, column: np.ndarray) -> dict[int, np.ndarray]:
        order = np.lexsort((self.ts, self.user))
        users, values = self.user[order], column[order]
        cuts = np.flatnonzero(np.diff(users)) + 1
        return {int(u[0]): v for u, v in zip(np.split(users, cuts), np.split(values, cuts)) if len(u)}


def load_interactions(features_dir: Path, n_items: int | None = None) -> Interactions:
    """Read `features/ds=.../events` (sorted by ts within user as the feature job wrote it)."""
    path = Path(features_dir) / "events"
    if not path.exists():
        raise InputError(f"{path}: no feature output (run the features stage for this date first)")
    table = pads.dataset(path, format="parquet").to_table(
        columns=[S.USER_ID, S.ITEM_IDX, S.EVENT_TYPE, S.TS, S.RATING, S.SPLIT]
    )
    user_codes = pc.dictionary_encode(table.column(S.USER_ID)).combine_chunks()
    user_ids = user_codes.dictionary.to_numpy(zero_copy_only=False).astype(str)
    event_names = table.column(S.EVENT_TYPE).to_numpy(zero_copy_only=False)
    split_names = table.column(S.SPLIT).to_numpy(zero_copy_only=False)
    item = table.column(S.ITEM_IDX).to_numpy().astype(np.int32)
    ts = table.column(S.TS).cast("int64").to_numpy()
    rating = table.column(S.RATING).to_numpy(zero_copy_only=False)
    rating = np.array([np.nan if r is None else r for r in rating], dtype=np.float32) if rating.dtype == object else rating.astype(np.float32)
    event = np.fromiter((EVENT_CODE[e] for e in event_names), dtype=np.int8, count=len(event_names))
    split = np.fromiter((S.SPLITS.index(s) for s in split_names), dtype=np.int8, count=len(split_names))
    user = user_codes.indices.to_numpy().astype(np.int32)
    order = np.lexsort((ts, user))
    n = int(item.max()) + 1 if len(item) else 0
    return Interactions(
        user_ids, user[order], item[order], event[order], ts[order], rating[order], split[order],
        max(n, n_items or 0),
    )
