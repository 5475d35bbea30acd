"""Development benchmark of the multi-task RL model: each preset and the baselines on public data.

Leave-one-out per user (last item test, the one before valid), the full catalogue ranked,
the user's history excluded; NDCG@10 and HR@10 on test, early stopping on valid.

    .venv/bin/python scripts/mtrl_dev_bench.py --dataset toys --data $DATA/amazon-toys
    .venv/bin/python scripts/mtrl_dev_bench.py --dataset movielens --data $DATA/movielens-latest-small \\
        --presets full,sasrec_ce --epochs 40 --set dropout=0.2
    .venv/bin/python scripts/mtrl_dev_bench.py --dataset scientific --data $DATA/amazon-scientific --cold-share 0.1
    .venv/bin/python scripts/mtrl_dev_bench.py --dataset synthetic     # generated demo data, nightly protocol

Datasets: movielens (ratings.csv + movies.csv; text = title + genres), toys (Toys_and_Games.txt,
no text: the model runs id-only), scientific (Scientific.*.inter + Scientific.text), synthetic
(recsys.data.generate; last day test, the day before valid; text = title, category, description).
--cold-share S holds a random share S of items out of training: reported as recall@10 on the
test cases whose item never occurs in training (cold start through text).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from recsys import schema as S
from recsys.benchmark import WHOLE_LOG, hold_out_items
from recsys.data.interactions import EVENT_CODE, Interactions
from recsys.evaluate.metrics import ranking_report
from recsys.evaluate.offline import cold_recall
from recsys.evaluate.protocol import EvalCases, temporal_cases, validation_cases
from recsys.models import build_model
from recsys.models.mtrl.config import parse_setting
from recsys.scoring import top_k

# no_memory needs no run of its own: every row with an item memory also has network_ndcg@10
PRESET_NAMES = ("full", "no_text", "no_q", "no_behaviour", "sasrec_ce")
TRAIN, VALID, TEST = (S.SPLITS.index(s) for s in S.SPLITS)


# ------------------------------------------------------------------ loaders


def leave_one_out(seqs: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], n_items: int) -> Interactions:
    """Per user (items, events, ts, ratings) in time order -> Interactions split leave-one-out."""
    cols = [[], [], [], [], [], []]
    for u, (it, ev, ts, rt) in enumerate(seqs):
        sp = np.full(len(it), TRAIN, np.int8)
        if len(it) >= 3:
            sp[-1], sp[-2] = TEST, VALID
        for c, v in zip(cols, (np.full(len(it), u, np.int32), it, ev, ts, rt, sp)):
            c.append(v)
    user, item, event, ts, rating, split = (np.concatenate(c) for c in cols)
    return Interactions(
        np.array([f"u{u}" for u in range(len(seqs))]), user, item.astype(np.int32), event.astype(np.int8),
        ts.astype(np.int64), rating.astype(np.float32), split, n_items,
    )


def _plain_seqs(lists: list[list[int]], event: str) -> list:
    out = []
    for s in lists:
        n = len(s)
        out.append((np.array(s), np.full(n, EVENT_CODE[event]), np.arange(n) * 1_000_000, np.full(n, np.nan)))
    return out


def load_movielens(root: Path) -> tuple[Interactions, list[str]]:
    movies = {}
    with open(root / "movies.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            movies[int(row["movieId"])] = f"{row['title']}. {row['genres'].replace('|', ', ')}"
    rows = np.loadtxt(root / "ratings.csv", delimiter=",", skiprows=1)
    user, movie, rating, ts = rows[:, 0].astype(int), rows[:, 1].astype(int), rows[:, 2], rows[:, 3].astype(np.int64)
    ids = np.unique(movie)
    item = np.searchsorted(ids, movie)
    order = np.lexsort((item, ts, user))  # time order; ties broken by item for determinism
    user, item, rating, ts = user[order], item[order], rating[order], ts[order]
    cuts = np.flatnonzero(np.diff(user)) + 1
    seqs = [
        (it, np.full(len(it), EVENT_CODE["rating"]), t * 1_000_000, r)
        for it, t, r in zip(np.split(item, cuts), np.split(ts, cuts), np.split(rating, cuts))
    ]
    return leave_one_out(seqs, len(ids)), [movies.get(int(m), "") for m in ids]


def load_toys(root: Path) -> tuple[Interactions, None]:
    lists = []
    for line in (root / "Toys_and_Games.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) > 1:
            lists.append([int(x) - 1 for x in parts[1:]])  # 1-based item ids in the file
    n_items = max(max(s) for s in lists) + 1
    return leave_one_out(_plain_seqs(lists, "purchase"), n_items), None


def load_scientific(root: Path) -> tuple[Interactions, list[str]]:
    """Whole sequences from the test file (history + last item); text by item asin."""
    index = dict(line.split("\t") for line in (root / "Scientific.item2index").read_text().splitlines() if line)
    index = {k: int(v) for k, v in index.items()}
    texts = [""] * len(index)
    for line in (root / "Scientific.text").read_text().splitlines()[1:]:
        asin, _, text = line.partition("\t")
        if asin in index:
            texts[index[asin]] = text.strip()
    lists = []
    for line in (root / "Scientific.test.inter").read_text().splitlines()[1:]:
        _, hist, target = line.split("\t")
        lists.append([int(x) for x in hist.split()] + [int(target)])
    return leave_one_out(_plain_seqs(lists, "purchase"), len(index)), texts


def load_synthetic(root: Path | None) -> tuple[Interactions, list[str]]:
    """Generated demo data (GenerateConfig defaults); the last day is test, the day before valid."""
    import pyarrow.dataset as pads

    from recsys.data.generate import GenerateConfig, generate
    from recsys.text.encoder import item_text

    root = Path(root or tempfile.mkdtemp(prefix="mtrl-synth-"))
    if not (root / "raw").exists():
        generate(root, GenerateConfig())
    ev = pads.dataset(root / "raw" / "events", format="parquet", partitioning="hive").to_table().to_pandas()
    items = pads.dataset(root / "raw" / "items", format="parquet", partitioning="hive").to_table().to_pandas()
    items = items.sort_values(S.ITEM_ID).reset_index(drop=True)
    item_idx = {k: i for i, k in enumerate(items[S.ITEM_ID])}
    users = np.unique(ev[S.USER_ID].to_numpy())
    user = np.searchsorted(users, ev[S.USER_ID].to_numpy()).astype(np.int32)
    ts = ev[S.TS].astype("int64").to_numpy() // 1000 if str(ev[S.TS].dtype).endswith("[ns, UTC]") else ev[S.TS].astype("int64").to_numpy()
    day = ts // 86_400_000_000
    last = day.max()
    split = np.where(day == last, TEST, np.where(day == last - 1, VALID, TRAIN)).astype(np.int8)
    order = np.lexsort((ts, user))
    data = Interactions(
        users.astype(str), user[order], ev[S.ITEM_ID].map(item_idx).to_numpy().astype(np.int32)[order],
        ev[S.EVENT_TYPE].map(EVENT_CODE).to_numpy().astype(np.int8)[order], ts[order],
        ev[S.RATING].to_numpy(dtype=np.float32, na_value=np.nan)[order], split[order], len(items),
    )
    texts = [item_text(t, c, d) for t, c, d in zip(items[S.TITLE], items[S.CATEGORY], items[S.DESCRIPTION])]
    return data, texts


LOADERS = {"movielens": load_movielens, "toys": load_toys, "scientific": load_scientific, "synthetic": load_synthetic}


def encode_texts(texts: list[str], cache: Path) -> np.ndarray:
    """Item text -> (I, D) vectors with the packaged MiniLM, cached by text hash; empty text -> zeros."""
    from recsys.config import PACKAGED_TEXT_MODEL
    from recsys.text.encoder import TextEncoder, encode_with_cache

    vectors, stats = encode_with_cache(texts, cache, PACKAGED_TEXT_MODEL, lambda: TextEncoder(PACKAGED_TEXT_MODEL), progress=False)
    vectors[[not t for t in texts]] = 0.0
    logging.info("text: %s", stats)
    return vectors.astype(np.float32)


# ------------------------------------------------------------------ the benchmark


def run(args) -> list[dict]:
    data, texts = LOADERS[args.dataset](args.data)
    cold = np.zeros(0, np.int64)
    if args.cold_share > 0:
        data, cold = hold_out_items(data, args.cold_share, args.seed)
    text_path = None
    if texts is not None and not args.no_text:
        text = encode_texts(texts, args.cache)
        args.cache.mkdir(parents=True, exist_ok=True)
        text_path = args.cache / f"{args.dataset}-items.npy"
        np.save(text_path, text)
    test = temporal_cases(data, holdout="test")
    valid = validation_cases(data)
    fit_data = data.in_splits("train")  # every model learns from the same rows; valid only stops early
    print(f"# {args.dataset}: {len(np.unique(data.user))} users, {data.n_items} items, {len(data.item)} interactions, "
          f"{len(test.users)} test users, {len(cold)} cold items", flush=True)
    overrides = dict(parse_setting(kv) for kv in args.set)
    if args.epochs:
        overrides["max_epochs"] = args.epochs
    results = []
    jobs = [(b, {}) for b in args.baselines] + [(p, overrides) for p in args.presets]
    for name, over in jobs:
        t0 = time.perf_counter()
        if name in ("popularity", "cooc"):
            # LOO data spans years: popularity counts the whole training log, not the last week
            loo = args.dataset != "synthetic"
            params = WHOLE_LOG["itemknn" if name == "cooc" else name] if loo else {}
            model = build_model(name, **params).fit(fit_data)
            meta = {}
        else:
            model = build_model("mtrl", preset=name, text_path=str(text_path) if text_path else None, seed=args.seed, **over)
            model.fit(fit_data, valid)
            meta = model.meta
            if args.save:
                model.save(args.save / f"{args.dataset}-{name}")
        fit_s = time.perf_counter() - t0
        row = {"dataset": args.dataset, "model": name, **_metrics(model, test, cold), "fit_s": round(fit_s, 1)}
        row["valid_ndcg@10"] = _metrics(model, valid, np.zeros(0))["ndcg@10"]
        if getattr(model, "memory", None) is not None:  # the same network without its item memory
            row.update({"memory_weight": model.memory_weight, "network_ndcg@10": _metrics(model.network_only(), test, cold)["ndcg@10"]})
        if meta:
            row.update(best_epoch=meta.get("epoch"), epochs=meta.get("epochs_run"), epoch_s=round(meta["train_seconds"] / max(meta["epochs_run"], 1), 2),
                       seq_per_s=meta.get("seq_per_s"), notes="; ".join(meta.get("notes", [])), overrides=over)
        if meta and args.score_heads and model.net.q_proj is not None:
            # the same weights ranked by the Q head and by the blend: does Q help serving?
            trained = model.net.cfg
            for head, blend in (("q", 1.0), *[("blend", b) for b in args.blend_weights]):
                model.net.cfg = replace(trained, score_head=head, blend_weight=blend)
                row[f"{head}{blend:g}" if head == "blend" else head] = _metrics(model, test, cold)["ndcg@10"]
            model.net.cfg = trained
        results.append(row)
        print(json.dumps(row), flush=True)
    return results


def _metrics(model, cases: EvalCases, cold: np.ndarray) -> dict:
    items, _ = top_k(model, cases.histories, 10, exclude=cases.exclude)
    rep = ranking_report(items, cases.targets, ks=(10,))
    out = {"ndcg@10": round(rep["ndcg@10"], 5), "hr@10": round(rep["hr@10"], 5)}
    if len(cold):
        found = cold_recall(items, cases.targets, cold) or {"cold_recall@10": float("nan"), "cold_cases": 0}
        out.update({**found, "cold_recall@10": round(found["cold_recall@10"], 5)})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(LOADERS), required=True)
    ap.add_argument("--data", type=Path, default=None, help="dataset folder (synthetic: a lake root, generated if empty)")
    ap.add_argument("--presets", default=",".join(PRESET_NAMES), type=lambda s: [p for p in s.split(",") if p])
    ap.add_argument("--baselines", default="popularity,cooc", type=lambda s: [p for p in s.split(",") if p])
    ap.add_argument("--epochs", type=int, default=None, help="max epochs (early stopping usually ends sooner)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="MTRLConfig overrides for every preset")
    ap.add_argument("--score-heads", action="store_true", help="also rank test by the Q head and blends")
    ap.add_argument("--blend-weights", default="0.5,1,2", type=lambda s: [float(x) for x in s.split(",")])
    ap.add_argument("--cold-share", type=float, default=0.0)
    ap.add_argument("--no-text", action="store_true", help="never load item text")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--cache", type=Path, default=Path("var/bench/text-cache"))
    ap.add_argument("--save", type=Path, default=None, help="save each trained model in this folder")
    ap.add_argument("--out", type=Path, default=None, help="append result rows (JSON lines) here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = run(args)
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(f"\n{'model':<14}{'NDCG@10':>10}{'HR@10':>10}{'epochs':>8}{'fit s':>8}" + ("  cold R@10" if args.cold_share else ""))
    for r in rows:
        cold = f"{r['cold_recall@10']:>11.4f}" if "cold_recall@10" in r else ""
        print(f"{r['model']:<14}{r['ndcg@10']:>10.4f}{r['hr@10']:>10.4f}{str(r.get('best_epoch', '-')):>8}{r['fit_s']:>8.0f}{cold}")


if __name__ == "__main__":
    main()
