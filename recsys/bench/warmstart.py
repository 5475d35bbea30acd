"""`recsys bench warmstart`: the nightly mtrl training fine-tuned from last night's model vs from scratch.

One generated log covers `days + nights` days. Each of the last `nights` dates runs the stages
validate, features and encode on a scratch lake (no Airflow, no PostgreSQL), then fits mtrl as
the train stage does (early stopping on the validation window, one refit epoch over train +
validation) twice: from scratch, and warm from the previous night's warm model. Both are
ranked on that night's test day. Night 1 has no champion: its scratch model starts the warm
chain, so its warm figures are the scratch ones. The two fits alternate which goes first, and
each is timed in wall and in CPU seconds of this process (less moved by other jobs on a shared
machine). The goal compares nights 2 onwards: total warm / total scratch seconds (wall and CPU
both), and mean NDCG@10 warm / scratch.
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recsys.bench.common import emit, machine, table

TIME_GOAL, NDCG_GOAL = 0.3, 0.98


def _night(ds: dt.date, local, work: Path, previous: Path | None, overrides: dict, first_warm: bool) -> dict:
    import pyarrow.dataset as pads

    from recsys.data.interactions import load_interactions
    from recsys.evaluate.offline import context_for, evaluate_model
    from recsys.evaluate.protocol import temporal_cases, validation_cases
    from recsys.lake import Lake
    from recsys.models import build_model
    from recsys.pipeline import stages

    for stage in (stages.validate, stages.features, stages.encode):
        stage(ds, local)
    lake = Lake(Path(local.lake_root))
    # The whole catalogue, as the train stage loads it: a text model also ranks items nobody touched.
    catalogue = pads.dataset(lake.features(ds) / "items", format="parquet").count_rows()
    data = load_interactions(lake.features(ds), n_items=catalogue)
    train, valid, refit = data.in_splits("train"), validation_cases(data), data.in_splits("train", "valid")
    test, ctx = temporal_cases(data, holdout="test"), context_for(refit)
    text = lake.embeddings(ds) / "item_text.npy"
    params = {"preset": local.model_preset, "text_path": str(text), "seed": local.seed, "device": local.device,
              "max_len": local.max_seq_len, **overrides}  # fmt: skip
    if local.model_epochs:
        params["max_epochs"] = local.model_epochs
    if local.train_budget_minutes:
        params["budget_seconds"] = local.train_budget_minutes * 60

    def fit(**extra):
        t0, c0 = time.perf_counter(), time.process_time()
        model = build_model("mtrl", **params, **extra).fit(train, valid, refit_data=refit)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return model, wall, cpu, evaluate_model(model, test, ctx)["ndcg@10"]

    if previous is None:
        cold = hot = fit()
    elif first_warm:  # the machine's load drifts: neither fit always runs into it first
        hot = fit(init_from=str(previous))
        cold = fit()
    else:
        cold = fit()
        hot = fit(init_from=str(previous))
    scratch, scratch_s, scratch_cpu, scratch_ndcg = cold
    warm, warm_s, warm_cpu, warm_ndcg = hot
    folder = work / "models" / f"warm-{ds.isoformat()}"
    warm.save(folder)
    ws = warm.meta.get("warm_start", {})
    return {
        "ds": ds.isoformat(), "test_users": len(test.users), "windows": scratch.meta["n_windows"],
        "new_windows": ws.get("new_windows"), "replay_windows": ws.get("replay_windows"),
        "warm_epochs": ws.get("epochs"), "scratch_epochs": scratch.meta["epochs_run"],
        "warm_seconds": round(warm_s, 2), "scratch_seconds": round(scratch_s, 2),
        "warm_cpu_seconds": round(warm_cpu, 2), "scratch_cpu_seconds": round(scratch_cpu, 2),
        "warm_ndcg@10": round(warm_ndcg, 5), "scratch_ndcg@10": round(scratch_ndcg, 5),
        "warm_notes": [n for n in warm.meta.get("notes", []) if n.startswith("warm start")], "folder": folder,
    }


def run(
    nights: int = 7, users: int = 2000, items: int = 1000, days: int = 30, settings=None, overrides: dict | None = None
) -> dict:
    from recsys.config import get_settings
    from recsys.data.generate import GenerateConfig, generate

    host = machine()
    settings = settings or get_settings()
    overrides = overrides or {}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="recsys-bench-warm-") as tmp:
        work = Path(tmp)
        cfg = GenerateConfig(n_users=users, n_items=items, days=days + nights, seed=settings.seed)
        generate(work / "lake", cfg)
        local = settings.model_copy(update={"lake_root": work / "lake"})
        previous = None
        for k in range(nights):
            ds = cfg.end_date - dt.timedelta(days=nights - 1 - k)
            rows.append(_night(ds, local, work, previous, overrides, first_warm=k % 2 == 1))
            previous = rows[-1].pop("folder")
            r = rows[-1]
            print(f"night {k + 1}/{nights} {ds}: warm {r['warm_seconds']} s, ndcg@10 {r['warm_ndcg@10']}; "
                  f"scratch {r['scratch_seconds']} s, ndcg@10 {r['scratch_ndcg@10']}", file=sys.stderr, flush=True)
    later = rows[1:] or rows
    total = lambda key: sum(r[key] for r in later)  # noqa: E731
    time_ratio = total("warm_seconds") / total("scratch_seconds")
    cpu_ratio = total("warm_cpu_seconds") / total("scratch_cpu_seconds")
    ndcg_ratio = float(np.mean([r["warm_ndcg@10"] for r in later]) / np.mean([r["scratch_ndcg@10"] for r in later]))
    lines = [(k + 1, r["ds"], r["new_windows"] or "-", r["replay_windows"] or "-", r["windows"],
              f"{r['warm_epochs'] or '-'}/{r['scratch_epochs']}", r["warm_seconds"], r["scratch_seconds"],
              r["warm_seconds"] / r["scratch_seconds"], r["warm_cpu_seconds"], r["scratch_cpu_seconds"],
              r["warm_cpu_seconds"] / r["scratch_cpu_seconds"], f"{r['warm_ndcg@10']:.4f}",
              f"{r['scratch_ndcg@10']:.4f}", f"{r['warm_ndcg@10'] / r['scratch_ndcg@10']:.4f}")
             for k, r in enumerate(rows)]  # fmt: skip
    header = ("night", "ds", "new win", "replay win", "all win", "epochs w/s", "warm s", "scratch s", "wall ratio",
              "warm cpu s", "scratch cpu s", "cpu ratio", "warm ndcg@10", "scratch ndcg@10", "ndcg ratio")  # fmt: skip
    met = max(time_ratio, cpu_ratio) <= TIME_GOAL and ndcg_ratio >= NDCG_GOAL
    report = "\n".join([
        f"warm start benchmark: {users:,} users, {items:,} items, {days} days + {nights} nights, "
        f"overrides {overrides or 'none'}",
        f"machine: {host}",
        "",
        table(lines, header),
        "",
        f"nights 2-{nights}: warm/scratch wall time {time_ratio:.3f}, CPU time {cpu_ratio:.3f} (goal <= {TIME_GOAL}), "
        f"NDCG@10 {ndcg_ratio:.4f} (goal >= {NDCG_GOAL}): goal {'met' if met else 'missed'}",
    ])  # fmt: skip
    return emit(report, {"users": users, "items": items, "days": days, "nights": nights, "overrides": overrides,
                         "time_ratio": round(time_ratio, 4), "cpu_ratio": round(cpu_ratio, 4),
                         "ndcg_ratio": round(ndcg_ratio, 4), "goal_met": met,
                         "per_night": rows})  # fmt: skip
