"""Tonight's top-K lists for every active user, and similar items, written as Parquet for the publisher.

- active users: everyone with behaviour in the feature window, plus anyone with a validated
  event on ds whose events the features could not use (e.g. only unknown items);
- users whose history holds an item the model knows are ranked by the model
  (`recsys.scoring.rank_users`: fast path for factorised models, else `model.score`);
  everyone else gets the popularity fallback (distinct users per item over the last week),
  which is also written on its own (`fallback.parquet`) for users not in tonight's lists;
- never recommended: unavailable items to anyone, and per user what `exclude` names
  ('purchased' by default, 'seen', or 'none');
- an optional MMR re-rank by category (`diversity_lambda` > 0);
- a reason per row: "because of <item>" (the history item that contributed most), "popular"
  (fallback, or nothing in the history led to it) or "new for you" (an item younger than
  NEW_ITEM_DAYS the user never interacted with).

Rows are written sorted by (user_id, rank), the order the publisher streams without sorting.

Ranking the users the model knows is the one step an engine runs: `InProcess` (the default) in
this process, or the Spark job of `spark_jobs/score.py` in partitions; both call `score_users`
on the same blocks of users, so their lists are the same. Everything else (who is active, cold
start, the fallback and similar-items lists, the file) happens here, once.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from recsys import schema as S
from recsys.data.interactions import EVENT_CODE, Interactions, load_interactions
from recsys.errors import ConfigError, InputError
from recsys.lake import Lake
from recsys.models import build_model, load_model
from recsys.scoring import Ranking, explain_by_vectors, is_factorised, model_width, rank_users
from recsys.serve.similar import lists_table, similar_items, write_similar

log = logging.getLogger(__name__)

RECS_FILE = "recommendations.parquet"
FALLBACK_FILE = "fallback.parquet"
EXCLUDE_CHOICES = ("purchased", "seen", "none")
NEW_ITEM_DAYS = S.NEW_ITEM_DAYS
POPULAR = "popular"
NEW_FOR_YOU = "new for you"
BECAUSE = "because of "


@dataclass
class Catalogue:
    """Item attributes indexed by item_idx (indices without a catalogue row are blocked)."""

    item_ids: np.ndarray  # (n,) str ("" where no item)
    has_id: np.ndarray  # (n,) bool
    blocked: np.ndarray  # (n,) bool: unavailable or unknown
    category: np.ndarray  # (n,) int64 code, -1 = none
    is_new: np.ndarray  # (n,) bool


def load_catalogue(lake: Lake, day: dt.date) -> Catalogue:
    path = lake.features(day) / "items"
    if not path.exists():
        raise InputError(f"{path}: no catalogue features (run the features stage for {day} first)")
    items = pads.dataset(path, format="parquet").to_table().sort_by(S.ITEM_IDX)
    idx = items.column(S.ITEM_IDX).to_numpy()
    n = int(idx.max()) + 1 if len(idx) else 0
    item_ids = np.full(n, "", dtype=object)
    item_ids[idx] = items.column(S.ITEM_ID).to_numpy(zero_copy_only=False)
    has_id = np.zeros(n, dtype=bool)
    has_id[idx] = True
    blocked = np.ones(n, dtype=bool)  # unknown indices are never recommended
    blocked[idx] = ~items.column(S.AVAILABLE).to_numpy(zero_copy_only=False).astype(bool)
    category = np.full(n, -1, dtype=np.int64)
    if S.CATEGORY in items.column_names:
        codes = pc.dictionary_encode(items.column(S.CATEGORY).combine_chunks()).indices
        category[idx] = pc.fill_null(codes, -1).to_numpy(zero_copy_only=False)
    is_new = np.zeros(n, dtype=bool)
    stats = lake.features(day) / "item_stats"
    if stats.exists():
        t = pads.dataset(stats, format="parquet").to_table(columns=[S.ITEM_IDX, S.AGE_DAYS])
        age = pc.fill_null(t.column(S.AGE_DAYS), NEW_ITEM_DAYS).to_numpy(zero_copy_only=False)
        is_new[t.column(S.ITEM_IDX).to_numpy()] = age < NEW_ITEM_DAYS
    elif S.CREATED_AT in items.column_names:
        midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
        created = items.column(S.CREATED_AT).cast(pa.int64()).to_numpy(zero_copy_only=False)
        is_new[idx] = (midnight.timestamp() * 1e6 - created) < NEW_ITEM_DAYS * 86_400e6
    return Catalogue(item_ids.astype(str), has_id, blocked, category, is_new)


def _extra_active_users(lake: Lake, day: dt.date, known: np.ndarray) -> np.ndarray:
    """User ids with a validated event on ds that the feature window does not know (cold start)."""
    path = lake.validated_events_partition(day)
    if not path.exists():
        return np.zeros(0, dtype=str)
    ids = pc.unique(pads.dataset(path, format="parquet").to_table(columns=[S.USER_ID]).column(S.USER_ID))
    ids = ids.to_numpy(zero_copy_only=False).astype(str)
    return np.setdiff1d(ids, known)


def _exclusions(data: Interactions, users: np.ndarray, exclude: str) -> list[np.ndarray] | None:
    if exclude == "none":
        return None
    if exclude == "purchased":
        data = data.select(data.event == EVENT_CODE["purchase"])
    elif exclude != "seen":
        raise ConfigError(f"exclude={exclude!r}: expected one of {EXCLUDE_CHOICES}")
    per_user = data.histories()
    empty = np.zeros(0, np.int32)
    return [np.unique(per_user.get(int(u), empty)) for u in users]


def _reasons(model, seqs: list[np.ndarray], items: np.ndarray, scores: np.ndarray, cat: Catalogue,
             block_users: int) -> np.ndarray:
    """(U, K) object array of reasons for ranked lists."""
    n, k = items.shape
    out = np.full((n, k), POPULAR, dtype=object)
    # A model's own explanation vectors, else a factorised model's item vectors: one blocked pass.
    explain_vectors = getattr(model, "explain_vectors", None)
    vectors = explain_vectors() if callable(explain_vectors) else model.item_vectors() if is_factorised(model) else None
    if vectors is not None:
        because = explain_by_vectors(vectors, seqs, items, block_users)
        ok = (because >= 0) & np.isfinite(scores)
        out[ok] = np.char.add(BECAUSE, cat.item_ids[because[ok]].astype(str)).astype(object)
        return out
    lengths = np.isfinite(scores).sum(axis=1)
    for u, seq in enumerate(seqs):
        m = int(lengths[u])
        if m:
            for j, reason in enumerate(model.explain(seq, items[u, :m])):
                if reason.startswith(BECAUSE):
                    idx = int(reason[len(BECAUSE):])
                    reason = BECAUSE + str(cat.item_ids[idx]) if idx < len(cat.item_ids) else POPULAR
                out[u, j] = reason
    return out


def _mark_new(reasons: np.ndarray, items: np.ndarray, scores: np.ndarray, seqs: list[np.ndarray] | None,
              cat: Catalogue) -> None:
    """'new for you' for recommended items younger than NEW_ITEM_DAYS the user never interacted with."""
    fresh = cat.is_new[np.clip(items, 0, len(cat.is_new) - 1)] & (items < len(cat.is_new)) & np.isfinite(scores)
    for u in np.flatnonzero(fresh.any(axis=1)):
        cols = np.flatnonzero(fresh[u])
        if seqs is not None:
            cols = cols[~np.isin(items[u, cols], seqs[u])]
        reasons[u, cols] = NEW_FOR_YOU


@dataclass(frozen=True)
class ScoreOptions:
    """How every block's lists are made, whichever engine runs it."""

    k: int
    block_users: int = 1024
    device: str = "cpu"
    diversity_lambda: float = 0.0


@dataclass
class Users:
    """The users the model ranks, aligned: item_idx histories in time order, each step's
    behaviour, and what each may not be recommended (None: nothing excluded)."""

    seqs: list[np.ndarray]
    events: list[np.ndarray]
    exclude: list[np.ndarray] | None


@dataclass
class Lists(Ranking):
    """A Ranking with a reason per slot."""

    reasons: np.ndarray  # (U, K) object


def score_users(model, cat: Catalogue, users: Users, opts: ScoreOptions) -> Lists:
    """Rank, explain and mark new items for `users`: the whole of the per-user work.

    rank_users and the explanations go through the users in blocks of `opts.block_users` from
    the first, so a caller that hands over one such block at a time (the Spark job) computes
    exactly what one call over all users does.
    """
    category = cat.category if opts.diversity_lambda > 0 else None
    ranking = rank_users(
        model, users.seqs, opts.k, exclude=users.exclude, blocked=cat.blocked, block_users=opts.block_users,
        device=opts.device, diversity_lambda=opts.diversity_lambda, category=category, events=users.events,
    )
    reasons = _reasons(model, users.seqs, ranking.items, ranking.scores, cat, opts.block_users)
    _mark_new(reasons, ranking.items, ranking.scores, users.seqs, cat)
    return Lists(ranking.items, ranking.scores, ranking.candidates, reasons)


class InProcess:
    """RECSYS_SCORE_ENGINE=local: every user in this process, with the model already loaded."""

    name = "local"

    def score(self, model_path: Path, model, cat: Catalogue, users: Users, opts: ScoreOptions,
              workdir: Path) -> Lists:
        """The lists of `users`; `workdir` is a folder an engine may use for scratch files."""
        return score_users(model, cat, users, opts)


def _write_fallback(out: Path, items: np.ndarray, scores: np.ndarray, cat: Catalogue) -> dict:
    """The one (1, K) popularity list as out/fallback.parquet: rank, item_id, score, reason 'popular'."""
    table = lists_table(
        np.array([POPULAR]), np.clip(items, 0, len(cat.item_ids) - 1), scores, cat.item_ids, "list", S.ITEM_ID,
        extra={S.REASON: np.full(items.shape, POPULAR, dtype=object)},
    ).drop_columns(["list"])
    path = out / FALLBACK_FILE
    pq.write_table(table, path)
    return {"fallback_path": str(path), "fallback_rows": int(table.num_rows)}


def score_all_users(
    lake: Lake,
    day: dt.date,
    model_path: Path,
    k: int,
    *,
    exclude: str = "purchased",
    block_users: int = 1024,
    device: str = "cpu",
    diversity_lambda: float = 0.0,
    similar_k: int | None = 20,
    text_vectors_path: Path | None = None,
    engine=None,
) -> dict:
    """Write tonight's lists (see the module docstring); `engine` ranks the users the model
    knows: anything with `name` and InProcess's `score` (default InProcess)."""
    engine = engine or InProcess()
    data = load_interactions(lake.features(day))  # every split: lists use behaviour up to ds
    cat = load_catalogue(lake, day)
    model = load_model(model_path)
    width = model_width(model)
    category = cat.category if diversity_lambda > 0 else None

    histories = data.histories()
    users = np.array(sorted(histories), dtype=np.int64)
    known = [bool(np.any(histories[u] < width)) for u in users]
    warm = users[np.array(known, dtype=bool)] if len(users) else users
    cold_ids = np.concatenate(
        [data.user_ids[np.setdiff1d(users, warm)], _extra_active_users(lake, day, data.user_ids)]
    ).astype(str)

    behaviours = data.event_histories()
    users_in = Users([histories[int(u)] for u in warm], [behaviours[int(u)] for u in warm],
                     _exclusions(data, warm, exclude))
    opts = ScoreOptions(k=k, block_users=block_users, device=device, diversity_lambda=diversity_lambda)
    out = lake.scores(day)
    out.mkdir(parents=True, exist_ok=True)
    ranked = engine.score(Path(model_path), model, cat, users_in, opts, out)
    keys, items, scores, why = [data.user_ids[warm].astype(str)], [ranked.items], [ranked.scores], [ranked.reasons]
    expected = ranked.expected_rows()

    # The week's most popular available items: the list of users the model can do nothing for,
    # and the batch's fallback list for users it has no list for at all.
    fallback = rank_users(
        build_model("popularity").fit(data), [np.zeros(0, np.int32)], k, blocked=cat.blocked, device=device,
        diversity_lambda=diversity_lambda, category=category,
    )
    if len(cold_ids):
        rep = len(cold_ids)
        keys.append(cold_ids)
        items.append(np.repeat(fallback.items, rep, axis=0))
        scores.append(np.repeat(fallback.scores, rep, axis=0))
        cold_reasons = np.full((rep, fallback.items.shape[1]), POPULAR, dtype=object)
        _mark_new(cold_reasons, items[-1], scores[-1], None, cat)
        why.append(cold_reasons)
        expected += fallback.expected_rows() * rep

    all_scores = np.concatenate(scores)
    table = lists_table(
        np.concatenate(keys), np.clip(np.concatenate(items), 0, len(cat.item_ids) - 1), all_scores, cat.item_ids,
        S.USER_ID, S.ITEM_ID, extra={S.REASON: np.concatenate(why)},
    )
    path = out / RECS_FILE
    pq.write_table(table, path)
    popular = _write_fallback(out, fallback.items, fallback.scores, cat)
    listed = int(np.isfinite(all_scores).any(axis=1).sum())
    result = {
        "path": str(path), "users": listed, "rows": int(table.num_rows), "expected_rows": int(expected),
        "k": int(k), "cold_start_users": int(len(cold_ids)), "fast_path": is_factorised(model), "exclude": exclude,
        "diversity_lambda": float(diversity_lambda), "engine": engine.name, **popular,
    }
    if result["rows"] != result["expected_rows"]:
        log.warning("%s rows scored, %s expected: the model left candidates unscored (NaN)", result["rows"], expected)
    if similar_k:
        text = np.load(text_vectors_path) if text_vectors_path and Path(text_vectors_path).exists() else None
        neighbours = similar_items(model, similar_k, blocked=cat.blocked, text_vectors=text,
                                   block_items=block_users, device=device)
        if neighbours is not None:
            result.update(write_similar(out, neighbours, cat.item_ids, cat.has_id))
        else:
            (out / "similar_items.parquet").unlink(missing_ok=True)
    return result
