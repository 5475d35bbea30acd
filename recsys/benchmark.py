"""`recsys benchmark`: import -> features -> train -> evaluate, offline, for several models at once.

No Airflow and no PostgreSQL: the same stage code as the nightly run, on a scratch lake.
Every model is trained on the same `train` split, stops early on `valid` where it can, and is
ranked against the full catalogue on `test` with already-seen items excluded.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from recsys import schema as S
from recsys.config import Settings
from recsys.data.interactions import load_interactions
from recsys.errors import ConfigError
from recsys.evaluate.metrics import paired_difference
from recsys.evaluate.offline import context_for, evaluate_model, item_side_info
from recsys.evaluate.protocol import temporal_cases, validation_cases
from recsys.lake import Lake
from recsys.models.mtrl.blend import Blend
from recsys.tables import metric_table, text_table

log = logging.getLogger(__name__)

BASELINE_KINDS = {"popularity": ("popularity", {}), "itemknn": ("cooc", {})}
# Leave-one-out has no time axis worth the name (public logs span years, Amazon sequences
# carry no timestamps): "recent" popularity there counts the whole training log.
WHOLE_LOG = {"popularity": {"window_days": 365_000}, "itemknn": {"popularity_window_days": 365_000}}
NEURAL_PRESETS = ("full", "sasrec_ce", "no_text", "no_q", "no_behaviour", "no_memory")
# Settings that change only how a trained network's scores are served, not the network.
SERVING_ONLY = ("memory", "memory_weight", "reward_blend", "gain_floor", "prior_days")
ALL_MODELS = (*BASELINE_KINDS, *NEURAL_PRESETS)
# Not an importer: the demo's generator, sized by --path (see _generate).
SYNTHETIC = "synthetic"
SUMMARY_METRICS = ("ndcg@10", "hr@10", "mrr@10", "recall@20")
# Reported where the data has them: targets of one behaviour only (as in SQN), and users with
# short histories.
BEHAVIOUR_METRICS = ("click_ndcg@10", "click_hr@10", "purchase_ndcg@10", "purchase_hr@10")
SEGMENT_METRICS = ("history_1_2_ndcg@10", "history_3_5_ndcg@10")


def _build(name: str, text_path: Path | None, overrides: dict, protocol: str = "temporal"):
    from recsys.models import build_model

    if name in BASELINE_KINDS:
        kind, params = BASELINE_KINDS[name]
        return build_model(kind, **params, **(WHOLE_LOG[name] if protocol == "loo" else {}))
    if name in NEURAL_PRESETS:
        return build_model("mtrl", preset=name, text_path=str(text_path) if text_path else None, **overrides)
    raise ConfigError(f"unknown model {name!r}; expected some of {list(ALL_MODELS)}")


def prepare(fmt: str, path: Path, protocol: str, settings: Settings, work: Path) -> tuple[dt.date, Lake, Settings]:
    """Import the dataset into a scratch lake and build its features with the given split."""
    from recsys.importers import import_dataset
    from recsys.pipeline import stages

    lake_root = work / "lake"
    log.info("importing %s from %s", fmt, path)
    if fmt == SYNTHETIC:
        summary = _generate(path, lake_root, settings.seed)
    else:
        summary = import_dataset(fmt, Path(path), lake_root, max_bad_row_share=settings.max_bad_row_share)
    ds = dt.date.fromisoformat(str(summary["end_date"]))
    # Public logs span years: the history window must cover all of them.
    span = (ds - dt.date.fromisoformat(str(summary["start_date"]))).days + 1
    # Public logs are bursty day to day; the volume alarm is for nightly feeds, not for them.
    local = settings.model_copy(update={"lake_root": lake_root, "history_days": max(span, 2), "max_volume_drop": 1.0, "max_volume_rise": 0.0})
    log.info("stage validate")
    stages.validate(ds, local)
    log.info("stage features (%s split)", protocol)
    stages.features(ds, local, split_mode=protocol)
    log.info("stage encode (item text)")
    stages.encode(ds, local)
    return ds, Lake(lake_root), local


def _generate(spec: Path | str, lake_root: Path, seed: int) -> dict:
    """The demo's generator as a benchmark source: `--path users=20000,items=5000,days=30`
    (any of the three; `-` or empty keeps the demo's defaults)."""
    from recsys.data.generate import GenerateConfig, generate

    names = {"users": "n_users", "items": "n_items", "days": "days"}
    given = {}
    for part in filter(None, str(spec).replace("-", "").split(",")):
        key, _, value = part.partition("=")
        if key not in names or not value.isdigit():
            raise ConfigError(f"--path {spec!r}: synthetic takes users=N,items=N,days=N")
        given[names[key]] = int(value)
    return generate(lake_root, GenerateConfig(seed=seed, **given))


def hold_out_items(data, share: float, seed: int = 0):
    """Drop every training interaction of a random `share` of the catalogue: those items are
    then cold (known only by their text) wherever they are a validation or test target.
    Returns (the data without those rows, the held-out item indices sorted)."""
    rng = np.random.default_rng(seed)
    cold = np.sort(rng.choice(data.n_items, int(round(share * data.n_items)), replace=False))
    return data.select(~(np.isin(data.item, cold) & (data.split == S.SPLITS.index("train")))), cold


def run_benchmark(
    fmt: str, path: Path, protocol: str, models: list[str], settings: Settings, overrides: dict | None = None,
    workdir: Path | None = None, cold_share: float = 0.0, save_dir: Path | None = None,
) -> dict:
    if protocol not in ("loo", "temporal"):
        raise ConfigError(f"protocol {protocol!r}: expected loo or temporal")
    if workdir is None:  # a scratch lake, removed afterwards
        with tempfile.TemporaryDirectory(prefix="recsys-bench-") as tmp:
            return run_benchmark(fmt, path, protocol, models, settings, overrides, Path(tmp), cold_share, save_dir)
    work = Path(workdir)
    ds, lake, _ = prepare(fmt, path, protocol, settings, work)
    data = load_interactions(lake.features(ds))
    if cold_share > 0:
        data, _ = hold_out_items(data, cold_share)
    train = data.in_splits("train")
    valid = validation_cases(data)
    test = temporal_cases(data, holdout="test")
    category, new_items = item_side_info(lake.features(ds), data.n_items)
    ctx = context_for(train, category, new_items)
    text_path = lake.embeddings(ds) / "item_text.npy"
    results: dict[str, dict] = {}
    per_user: dict[str, dict] = {}  # each model's per-user NDCG@10s, for the paired comparisons
    trained: list[tuple[dict, str, object]] = []  # (effective config, name, model) of each neural run
    log.info("%d interactions, %d items, %d test users", len(data.item), data.n_items, len(test.users))
    for i, name in enumerate(models, 1):
        log.info("model %s (%d of %d)", name, i, len(models))
        model = _build(name, text_path if text_path.exists() else None, overrides or {}, protocol)
        same, network = None, None
        if name in NEURAL_PRESETS:
            cfg, notes = model.effective_config(train)
            same = next((other for c, other, _ in trained if c == cfg), None)
            network = next(((o, m) for c, o, m in trained if _network_part(c) == _network_part(cfg) and not cfg["memory"]), None)
        if same is not None:
            # The data cannot train what this ablation removes (no text, one behaviour...), so it
            # is the same network as `same`: deterministic on the CPU, it would repeat its numbers.
            results[name] = {**results[same], "same_as": same, "notes": notes}
            per_user[name] = per_user[same]
            log.info("%s: same effective configuration as %s (%s); not trained again", name, same, "; ".join(notes))
            continue
        if network is not None:
            # Only the serving differs (no memory): the network `other` trained, scored on its own.
            other, trained_model = network
            report = evaluate_model(trained_model.network_only(), test, ctx, per_user=True)
            per_user[name] = report.pop("per_user")
            results[name] = {**report, "train_seconds": results[other]["train_seconds"], "network_of": other,
                             **_training_figures(trained_model.meta)}  # fmt: skip
            continue
        t0 = time.perf_counter()
        model.fit(train, valid)
        seconds = time.perf_counter() - t0
        if save_dir is not None and name in NEURAL_PRESETS:
            model.save(Path(save_dir) / name)
        report = evaluate_model(model, test, ctx, per_user=True)
        per_user[name] = report.pop("per_user")
        report["train_seconds"] = round(seconds, 2)
        if name in NEURAL_PRESETS:
            report.update(_training_figures(model.meta))
            trained.append((cfg, name, model))
            if not model.blend.network_only:
                report["serving"] = _serving_variants(model, test, ctx, per_user[name])
                report["network_ndcg@10"] = report["serving"]["ranking head alone"]["ndcg@10"]
                report["memory_weight"] = model.memory_weight
            report["blend"] = {k: v for k, v in model.blend.to_dict().items() if k != "chosen_on"}
        results[name] = report
        log.info("%s: ndcg@10 %.4f in %.1fs", name, report["ndcg@10"], seconds)
    if "full" in per_user:
        for name in results:
            if name != "full":
                results[name]["vs_full"] = _paired(per_user[name], per_user["full"])
    return {
        "dataset": Path(path).name, "format": fmt, "protocol": protocol, "users": len(test.users),
        "items": int(data.n_items), "interactions": int(len(data.item)), "cold_share": cold_share, "models": results,
    }


# The same trained network served with one term of its blend left out (or all but the memory):
# what each term adds, measured without training anything again.
SERVING_VARIANTS = {
    "ranking head alone": lambda b: Blend(),
    "ranking head + memory": lambda b: Blend(memory=b.memory),
    "without Q": lambda b: Blend(b.memory, 0.0, b.buy, b.pop),
    "without buy": lambda b: Blend(b.memory, b.q, 0.0, b.pop),
    "without prior": lambda b: Blend(b.memory, b.q, b.buy),
}
VARIANT_METRICS = ("ndcg@10", "click_ndcg@10", "purchase_ndcg@10", "history_1_2_ndcg@10", "history_3_5_ndcg@10")


def _serving_variants(model, test, ctx, served: dict) -> dict:
    """Test figures of the served blend's variants (SERVING_VARIANTS) that differ from it, each
    with its paired difference to the served blend (`vs_served`: variant minus served)."""
    out = {}
    for name, make in SERVING_VARIANTS.items():
        blend = make(model.blend)
        if name != "ranking head alone" and blend.to_dict() == {**model.blend.to_dict(), "chosen_on": {}}:
            continue  # the term is 0 in the served blend: the variant is the served model
        report = evaluate_model(model.with_blend(blend), test, ctx, per_user=True)
        out[name] = {m: report[m] for m in VARIANT_METRICS if m in report}
        out[name]["vs_served"] = _paired(report["per_user"], served)
    return out


def _paired(a: dict, b: dict) -> dict:
    """{metric: {"diff": mean(a - b), "se": its standard error}} over the users both rank."""
    out = {}
    for metric in ("ndcg@10", "purchase_ndcg@10"):
        if metric in a and metric in b:
            diff, se = paired_difference(a[metric], b[metric])
            out[metric] = {"diff": round(diff, 5), "se": round(se, 5)}
    return out


def _network_part(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in SERVING_ONLY}


def _training_figures(meta: dict) -> dict:
    """Epochs, best epoch and CPU/GPU throughput of a neural model's run, from its metadata."""
    hist = meta.get("history") or []
    out = {"epochs": len(hist), "best_epoch": meta.get("epoch"), "notes": meta.get("notes", [])}
    if hist:
        out["epoch_seconds"] = round(float(np.median([h["seconds"] for h in hist])), 2)
        out["sequences_per_second"] = round(float(np.median([h["seq_per_s"] for h in hist])), 1)
    return out


def summary_line(result: dict) -> str:
    """The benchmark's last line: one JSON object with the headline metrics per model."""
    models = {}
    for name, r in result["models"].items():
        models[name] = {**{m: round(float(r.get(m, np.nan)), 5) for m in SUMMARY_METRICS}, "train_seconds": r["train_seconds"]}
        extras = ("cold_recall@10", *BEHAVIOUR_METRICS, *SEGMENT_METRICS, "ndcg@10_se", "purchase_ndcg@10_se",
                  "same_as", "network_of", "network_ndcg@10", "memory_weight", "blend", "serving", "vs_full")
        for extra in extras:
            if extra in r:
                models[name][extra] = round(r[extra], 5) if isinstance(r[extra], float) else r[extra]
    head = {"dataset": result["dataset"], "protocol": result["protocol"]}
    if result.get("cold_share"):
        head["cold_share"] = result["cold_share"]
    return json.dumps({**head, "models": models})


def print_report(result: dict) -> None:
    print(
        f"{result['dataset']} ({result['format']}), protocol {result['protocol']}: "
        f"{result['users']} test users, {result['items']} items, {result['interactions']} interactions"
    )
    cold = ("cold_recall@10",) if any("cold_recall@10" in r for r in result["models"].values()) else ()
    print(metric_table(result["models"], (*SUMMARY_METRICS, *cold, "coverage@10", "train_seconds")))
    more = [c for c in (*BEHAVIOUR_METRICS, *SEGMENT_METRICS) if any(c in r for r in result["models"].values())]
    if more:
        print()
        print(metric_table(result["models"], more))
        users = {c: next((r.get(c.replace("_ndcg@10", "_users")) for r in result["models"].values()), None) for c in SEGMENT_METRICS}
        print("users per segment: " + ", ".join(f"{c.replace('_ndcg@10', '')} {u}" for c, u in users.items() if u))
    for name, r in result["models"].items():
        if "same_as" in r:
            print(f"{name}: the same network as {r['same_as']} on this data ({'; '.join(r['notes'])})")
        if "network_of" in r:
            print(f"{name}: the network {r['network_of']} trained, ranking on its own (no item memory)")
        if "blend" in r:
            print(f"{name}: served blend {r['blend']} (chosen on valid)")
        if "serving" in r:
            rows = {"served": r, **{f"  {v}": m for v, m in r["serving"].items()}}
            print(metric_table(rows, [c for c in VARIANT_METRICS if c in r]))
            print(_paired_table({f"  {v}": m["vs_served"] for v, m in r["serving"].items()}, "against the served blend"))
    against_full = {name: r["vs_full"] for name, r in result["models"].items() if "vs_full" in r}
    if against_full:
        print()
        print(_paired_table(against_full, "against full"))


def _paired_table(rows: dict[str, dict], what: str) -> str:
    """Paired differences as `+0.0123 ± 0.0045` (one standard error), a row per model."""

    metrics = [m for m in ("ndcg@10", "purchase_ndcg@10") if any(m in r for r in rows.values())]
    body = [[name, *(f"{r[m]['diff']:+.4f} ± {r[m]['se']:.4f}" if m in r else "" for m in metrics)] for name, r in rows.items()]
    return text_table(body, [f"paired, {what}", *metrics])
