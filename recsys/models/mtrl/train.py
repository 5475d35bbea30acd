"""train(cfg, data, ...) -> Artifact: the one training loop of the multi-task RL recommender.

CPU or CUDA (bf16 autocast), deterministic on CPU for a seed, early stopping on validation
NDCG@10, warm start from a champion checkpoint (fine-tuning on what is new since it trained),
and DDP when started by torchrun (the
command line is `python -m recsys.models.mtrl`, see __main__.py). Scoring a trained network
lives in inference.py.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from recsys.data.interactions import Interactions
from recsys.device import resolve_device
from recsys.evaluate.protocol import EvalCases
from recsys.models.mtrl.batches import CLICK, PURCHASE, Steps, Windows, make_windows, to_steps
from recsys.models.mtrl.checkpoint import WEIGHTS_FILE, fingerprint, save_checkpoint
from recsys.models.mtrl.config import MTRLConfig, with_changes
from recsys.models.mtrl.inference import evaluate
from recsys.models.mtrl.model import MTRLNet

log = logging.getLogger(__name__)


@dataclass
class Artifact:
    net: MTRLNet  # best weights (by validation NDCG@10), on the CPU
    cfg: MTRLConfig  # the config actually trained (heads without signal switched off)
    meta: dict = field(default_factory=dict)  # step, epoch, fingerprint, history, notes, timings


# ------------------------------------------------------------------ helpers


def lr_at(step: int, cfg: MTRLConfig, share: float = 1.0) -> float:
    """Linear warm-up over warmup_steps, then constant (early stopping ends the run), times
    `share`: what a budget's decay leaves of it (`_budget_spent`)."""
    return cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1)) * share


def adapt_config(cfg: MTRLConfig, steps: Steps, win: Windows, text: np.ndarray | None) -> tuple[MTRLConfig, list[str]]:
    """Switch off what the data cannot train, and say so (a head with a constant label learns nothing)."""
    notes, changes = [], {}
    if cfg.item_repr != "id" and (text is None or not np.any(text)):
        changes["item_repr"] = "id"
        notes.append(f"item_repr {cfg.item_repr} -> id: no item text given")
    real = win.target >= 0
    t_type = win.t_type[real]
    impressions = t_type <= PURCHASE
    click = t_type[impressions] >= CLICK
    buy = t_type[impressions] == PURCHASE
    constant = lambda x: len(np.unique(x)) < 2  # noqa: E731
    if cfg.behaviour_heads and (constant(click) and constant(buy)):
        changes["behaviour_heads"] = False
        notes.append("behaviour heads off: every impression has the same click/purchase label")
    if cfg.rating_head and not np.any(~np.isnan(win.rating[real])):
        changes["rating_head"] = False
        notes.append("rating head off: no ratings in the training data")
    if cfg.q_head and np.ptp(win.reward[real]) == 0:
        notes.append("one reward value only: the Q head acts as a discounted next-item classifier")
    return (with_changes(cfg, **changes) if changes else cfg), notes


def training_windows(cfg: MTRLConfig, data: Interactions) -> tuple[Steps, Windows]:
    """The interactions as steps, and the steps cut into the training windows of `cfg`."""
    steps = to_steps(data)
    win = make_windows(steps, cfg.max_len, cfg.window_stride, cfg.n_gap_buckets, cfg.rewards, cfg.rating_reward_mid, cfg.rating_reward_scale)
    return steps, win


def effective_config(cfg: MTRLConfig, data: Interactions, text: np.ndarray | None) -> tuple[MTRLConfig, list[str]]:
    """The configuration `train` would run on this data (heads it cannot train switched off)."""
    return adapt_config(cfg, *training_windows(cfg, data), text)


def warm_windows(cfg: MTRLConfig, win: Windows, champion: dict, replay: int | None = None) -> tuple[np.ndarray, np.ndarray] | str:
    """(new, replayed) window indices a warm start trains on: those predicting a step newer
    than the champion's training data, and a seeded sample of the older ones, `replay_share`
    of them or `replay` where given. Where the champion does not say when its data ended, or
    nothing is newer, why all windows train."""
    end = champion.get("data_end_us")
    if end is None:
        return "warm start trains on all windows: the champion does not record data_end_us"
    is_new = win.last_ts > end
    if not is_new.any():
        return "warm start trains on all windows: none predicts a step newer than the champion's data"
    old = np.flatnonzero(~is_new)
    n = round(cfg.replay_share * len(old)) if replay is None else min(max(replay, 0), len(old))
    replay_idx = np.random.default_rng([cfg.seed, 1]).choice(old, n, replace=False)
    return np.flatnonzero(is_new), np.sort(replay_idx)


def dist_setup(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins the process group when started by torchrun (or spawn)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def length_batches(idx: np.ndarray, length: np.ndarray, max_windows: int, max_positions: int, rng: np.random.Generator, pool: int = 8192) -> list[np.ndarray]:
    """Batches of similar-length windows holding up to max_positions real positions each.

    Pools of `pool` shuffled windows are sorted by length and cut into batches, and the batch
    order is shuffled: short windows stop paying for long ones' padding, and data with long
    histories gets more, smaller steps per epoch instead of a few huge ones.
    """
    out = []
    for lo in range(0, len(idx), pool):
        chunk = idx[lo : lo + pool]
        chunk = chunk[np.argsort(length[chunk], kind="stable")]
        cum = np.cumsum(length[chunk])
        start = 0
        while start < len(chunk):
            base = cum[start - 1] if start else 0
            stop = max(int(np.searchsorted(cum, base + max_positions, side="right")), start + 1)
            stop = min(stop, start + max_windows)
            out.append(chunk[start:stop])
            start = stop
    return [out[i] for i in rng.permutation(len(out))]


def to_batch(win: Windows, idx: np.ndarray, device: torch.device, gap_dropout: float, rng: np.random.Generator) -> dict:
    T = int(win.length[idx].max())  # right padding: columns past the longest window are empty
    gap = win.gap[idx, :T].copy()
    gap[rng.random(len(idx)) < gap_dropout] = 0  # hide time gaps as serving does
    arrays = {
        "item": win.item[idx, :T], "btype": win.btype[idx, :T], "gap": gap, "length": win.length[idx],
        "target": win.target[idx, :T], "t_type": win.t_type[idx, :T], "reward": win.reward[idx, :T],
        "rating": win.rating[idx, :T], "done": win.done[idx, :T], "boot": win.boot[idx, :T],
    }
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True) for k, v in arrays.items()}


def _subset(cases: EvalCases, n: int, seed: int) -> EvalCases:
    if len(cases.histories) <= n:
        return cases
    keep = np.sort(np.random.default_rng(seed).choice(len(cases.histories), n, replace=False))
    mask = np.zeros(len(cases.histories), bool)
    mask[keep] = True
    return cases.subset(mask)


# ------------------------------------------------------------------ the loop


def train(
    cfg: MTRLConfig,
    data: Interactions,
    valid: EvalCases | None = None,
    text: np.ndarray | None = None,
    init: tuple[MTRLNet, dict] | None = None,
    out_dir: Path | None = None,
    progress: bool = True,
    fine_tune: bool = True,
) -> Artifact:
    """Train on every interaction of `data`; stop early on `valid` NDCG@10 when given.

    text: (n_text, Dt) float32 item vectors, row i = item_idx i (zeros = no text).
    init: a (network, metadata) champion to warm-start from; its items keep their vectors,
    items new since then start from their text. With `fine_tune`, a compatible champion trains
    on `warm_windows` for at most `warm_epochs`; without it (the refit), on every window.
    out_dir: best checkpoint written there.
    """
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    rank, world = dist_setup(device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)  # epoch permutation and batches: identical on every rank

    # --- data: steps -> windows; heads the data cannot train are switched off ---
    steps, win = training_windows(cfg, data)
    if not len(win):
        raise ValueError("mtrl: no user has two or more steps to learn from")
    cfg, notes = adapt_config(cfg, steps, win, text)
    if rank == 0:
        for note in notes:
            log.info("mtrl: %s", note)
    n_items = max(data.n_items, 0 if text is None else len(text), 0 if init is None else init[0].n_items)
    default_type = int(np.bincount(steps.btype, minlength=5).argmax())

    # --- model: fresh, or the champion grown to tonight's catalogue ---
    text_t = None if text is None else torch.from_numpy(np.asarray(text, np.float32))
    net = _warm(cfg, n_items, text_t, init, notes) if init is not None else None
    warm = net is not None
    if net is None:
        net = _fresh(cfg, n_items, text_t)
    seen = np.bincount(steps.item, minlength=n_items)[:n_items] > 0
    net.has_id = torch.maximum(net.has_id, torch.from_numpy(seen).float())
    ratings = steps.rating[~np.isnan(steps.rating)]
    if len(ratings):
        net.rating_stats = torch.tensor([ratings.mean(), max(ratings.std(), 1e-3)], dtype=torch.float32)
    real_r = win.reward[win.target >= 0]
    net.q_range = torch.tensor([min(real_r.min(), 0.0), max(real_r.max(), 0.0)], dtype=torch.float32) / (1.0 - cfg.gamma)
    # proposal for sampled softmax and Q negatives: training popularity, smoothed over trained items
    counts = np.bincount(win.target[win.target >= 0], minlength=n_items).astype(np.float64) + seen
    net.sample_p = torch.tensor(counts / counts.sum(), dtype=torch.float32)
    net.to(device)
    target_net = copy.deepcopy(net).eval().requires_grad_(False) if cfg.q_head else None
    model = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    amp = device.type == "cuda" and cfg.amp
    local_rng = np.random.default_rng([cfg.seed, rank])  # gap dropout of this rank
    eval_cases = _subset(valid, cfg.eval_users, cfg.seed) if valid is not None and len(valid.histories) else None
    eval_seconds = 0.0  # what one evaluation takes, reserved by the budget
    if eval_cases is not None and cfg.budget_seconds > 0 and rank == 0:
        eval_cases, eval_seconds, note = _fit_evaluation(net, eval_cases, default_type, cfg)
        if note:
            notes.append(note)
            log.info("mtrl: %s", note)
    # The proposal, q_range and heads above come from every window; only the epochs shrink.
    pool, max_epochs, warm_start = np.arange(len(win)), cfg.max_epochs, None
    if warm and fine_tune:
        picked = warm_windows(cfg, win, init[1])
        if isinstance(picked, str):
            notes.append(picked)
        else:
            new, replay = picked
            pool, max_epochs = np.concatenate([new, replay]), min(cfg.max_epochs, cfg.warm_epochs)
            warm_start = {"new_windows": len(new), "replay_windows": len(replay)}
            notes.append(f"warm start fine-tunes on {len(new)} new and {len(replay)} replayed of {len(win)} windows")

    refit_bound = False  # a refit the budget cannot give every window: it decays over what it has
    if warm and not fine_tune and cfg.budget_seconds > 0:
        picked = _refit_pool(cfg, win, init[1], t_start, world, device)
        if picked is not None:
            pool, note = picked
            refit_bound = True
            notes.append(note)

    meta = {
        "fingerprint": fingerprint(data), "n_windows": len(win), "n_steps": int(len(steps.item)),
        "default_type": default_type, "notes": notes, "history": [], "world_size": world,
        "device": str(device), "tasks": list(net.tasks),
        # The newest step this run learns from: the next warm start's new windows come after it.
        "data_end_us": int(steps.ts.max()),
        "eval_users": 0 if eval_cases is None else len(eval_cases.histories),
    }
    best, best_state, bad, step, epoch = -1.0, None, 0, 0, 0
    curve: list[tuple[int, torch.Tensor]] = []  # (step, total loss) every 10 steps
    refit_scale = len(win) / max(len(pool), 1)  # the refit passes over every window
    spent, skip_eval, lr_share, t_loop = False, False, 1.0, time.perf_counter()
    trained = 0  # positions trained on, all ranks: the pace a budget-bound refit is sized by
    # Whether the budget can hold the full softmax is judged once, after SOFTMAX_PROBE_STEPS.
    judge_softmax = cfg.budget_seconds > 0 and net.n_items <= cfg.full_softmax_max_items and (
        2 * cfg.n_sampled <= int((net.has_id > 0).sum()))
    for epoch in range(1, max_epochs + 1):
        t0 = time.perf_counter()
        # the same global batches on every rank (shared rng); each rank takes its share
        batches = length_batches(rng.permutation(pool), win.length, cfg.batch_size, cfg.batch_positions, rng)
        batches = [b[rank::world] for b in batches if len(b) >= world]
        sums: dict[str, torch.Tensor] = {}  # on the device: no host sync per step
        epoch_windows = 0
        net.train()
        bar = tqdm(batches, desc=f"mtrl epoch {epoch}", disable=not progress or rank != 0 or not sys.stderr.isatty(), leave=False, unit="batch")
        for done, idx in enumerate(bar, 1):
            # schedule
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg, lr_share)
            # forward / backward
            batch = to_batch(win, idx, device, cfg.gap_dropout, local_rng)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                warm = step >= cfg.sac_warmup_steps
                loss, parts = model(batch, target_net, sac=cfg.sac and warm, sa2c=cfg.sa2c and warm)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            # clip, step, soft target update
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            if target_net is not None:
                with torch.no_grad():
                    for p_t, p in zip(target_net.parameters(), net.parameters()):
                        p_t.lerp_(p, cfg.tau)
            step += 1
            trained += int(win.length[idx].sum()) * world
            epoch_windows += len(idx) * world
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v.float()
            # log
            if step % 10 == 1:
                curve.append((step, loss.detach().float()))
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if step == cfg.max_steps:
                break
            # budget: stop at the step that leaves just the time for an evaluation and the refit
            if cfg.budget_seconds > 0 and (world == 1 or step % 10 == 0):
                spent, skip_eval, share, holds = _budget_spent(cfg, t_start, t0, done, len(batches), refit_scale,
                                                               eval_seconds, best_state is not None, world, device,
                                                               t_loop, 0 if refit_bound else max_epochs)
                lr_share = min(lr_share, share)  # once falling, never up again
                if judge_softmax and step >= SOFTMAX_PROBE_STEPS:
                    judge_softmax = False
                    need = min(cfg.min_epochs, max_epochs)
                    if holds < need:
                        net.cfg = with_changes(net.cfg, full_softmax_max_items=0)  # forward() reads it
                        meta["sampled_softmax"] = {"from_step": step, "negatives": cfg.n_sampled,
                                                   "full_epochs_the_budget_holds": round(holds, 2)}  # fmt: skip
                        notes.append(f"sampled softmax ({cfg.n_sampled} negatives) from step {step}: the budget's loop "
                                     f"holds {holds:.1f} full-softmax epochs, fewer than the {need} early stopping needs")  # fmt: skip
                        log.info("mtrl: %s", notes[-1])
                if spent:
                    meta["budget_stop"] = {"epoch": epoch, "step": step, "epoch_share": round(done / len(batches), 3),
                                           "budget_seconds": cfg.budget_seconds, "evaluated": not skip_eval}  # fmt: skip
                    notes.append(f"stopped at step {step}, {done / len(batches):.0%} into epoch {epoch}: "
                                 f"the rest of the {cfg.budget_seconds:g} s budget is the refit's"
                                 + (f"; the epoch is not evaluated (that takes {eval_seconds:.0f} s), so the best "
                                    "evaluated weights are kept" if skip_eval else ""))  # fmt: skip
                    log.info("mtrl: %s", notes[-1])
                    break
        seconds = time.perf_counter() - t0
        n_batches = max(len(batches), 1)
        row = {"epoch": epoch, "step": step, "seconds": round(seconds, 2), "seq_per_s": round(epoch_windows / seconds, 1),
               "lr": float(f"{lr_at(step, cfg, lr_share):.3g}")}
        row.update({f"loss_{k}": round(float(v) / n_batches, 4) for k, v in sums.items()})
        if cfg.weighting == "uncertainty":
            row["weights"] = net.task_weights.weights()

        # eval (rank 0) and early stopping, decided together on every rank
        stop = epoch == max_epochs or step == cfg.max_steps or spent
        if eval_cases is not None and not skip_eval:
            score = torch.zeros(2, device=device)
            if rank == 0:
                t_eval = time.perf_counter()
                row.update({k: round(v, 5) for k, v in evaluate(net, eval_cases, default_type).items()})
                eval_seconds = time.perf_counter() - t_eval
                improved = row["ndcg@10"] > best
                if improved:
                    best, bad, best_state = row["ndcg@10"], 0, _cpu_state(net)
                    meta.update(step=step, epoch=epoch, best_ndcg10=best)
                    # checkpoint (best so far)
                    if out_dir is not None:
                        save_checkpoint(Path(out_dir) / WEIGHTS_FILE, net, {**meta, "history": meta["history"] + [row]})
                else:
                    bad += 1
                row["best_ndcg@10"] = best
                score[:] = torch.tensor([row["ndcg@10"], float(bad >= cfg.patience and epoch >= cfg.min_epochs)])
            if world > 1:
                dist.broadcast(score, 0)
            stop = stop or bool(score[1])
        meta["history"].append(row)
        if rank == 0:
            log.info("mtrl %s", " ".join(f"{k}={v}" for k, v in row.items()))
        if stop:
            break

    if best_state is not None:
        net.load_state_dict(best_state)
    elif "step" not in meta:  # no validation: the last weights are the result
        meta.update(step=step, epoch=epoch)
        if out_dir is not None and rank == 0:
            save_checkpoint(Path(out_dir) / WEIGHTS_FILE, net, meta)
    if world > 1 and eval_cases is not None:  # rank 0 alone restored its best weights: share them
        for t in net.state_dict().values():
            dist.broadcast(t, 0)
    if warm_start is not None:
        meta["warm_start"] = {**warm_start, "epochs": epoch}
    total = time.perf_counter() - t_start
    train_s = sum(r["seconds"] for r in meta["history"])
    meta.update(
        loss_curve=[(s, round(float(v), 4)) for s, v in curve],
        epochs_run=epoch, seconds=round(total, 2), train_seconds=round(train_s, 2),
        position_seconds=train_s / max(trained, 1),
        seq_per_s=round(sum(r["seq_per_s"] for r in meta["history"]) / max(len(meta["history"]), 1), 1),
    )
    return Artifact(net.cpu().eval(), net.cfg, meta)


# The refit after early stopping gets at most this share of the budget: where one epoch is longer
# than the budget (10M events on a CPU), training still gets most of it and the refit a part of
# an epoch, rather than the refit's estimate leaving nothing for training.
REFIT_BUDGET_SHARE = 1 / 3
# A budget stop this early in an epoch leaves it unevaluated (after a first evaluation): on a
# million-item night the stop came one step into epoch 2, whose evaluation then cost the refit
# a minute for weights one step from the last evaluated ones.
EVAL_MIN_EPOCH_SHARE = 0.25
# Steps a budget-bound run takes on the full softmax before judging its pace: where the loop's
# time holds fewer than `min_epochs` epochs at that pace (early stopping's least), the rest
# trains on the sampled softmax (`n_sampled` negatives, log-Q corrected), about K/I of the
# cost per position. On the 1M-event log a 10-minute budget held 4.7 full-softmax epochs (test
# NDCG@10 0.96x the run trained to early stopping) and 21 sampled ones (1.04x).
SOFTMAX_PROBE_STEPS = 20


def _budget_spent(
    cfg: MTRLConfig, t_start: float, t_epoch: float, done: int, n_batches: int, refit_scale: float,
    eval_seconds: float, evaluated: bool, world: int, device: torch.device, t_loop: float | None = None,
    max_epochs: int = 0,
) -> tuple[bool, bool, float, float]:
    """(stop, skip the evaluation, learning-rate share, epochs the loop holds): whether training must stop now to leave time for the epoch's
    evaluation and the refit (`refit_epochs` passes over every window, at this epoch's pace,
    capped at REFIT_BUDGET_SHARE of the budget) inside `cfg.budget_seconds`; and whether the
    stopped epoch goes unevaluated, keeping the best evaluated weights: where what is left cannot
    even hold the evaluation (a catalogue so large that one evaluation outlasts the steps before
    it), or where the epoch has run less than EVAL_MIN_EPOCH_SHARE of its steps (a few steps
    change little, and the evaluation's time goes to the refit). Never before a first
    evaluation (`evaluated`): that one is what the run keeps. The share of the learning rate
    left (`budget_lr_decay`) falls linearly from 1 at the loop's first step (`t_loop`) to 0 where
    the time left is what the evaluation and the refit need, in a run the budget binds:
    `max_epochs` epochs at this pace would not end before then. A run the budget does not bind
    keeps the constant rate, so it stays deterministic for a seed. The epochs the loop holds
    are its whole time (from `t_loop` to where it must stop) over this epoch's pace. Rank 0
    decides for all, so every rank steps with the same rate."""
    now = time.perf_counter()
    epoch_estimate = (now - t_epoch) / done * n_batches
    refit = min(epoch_estimate * cfg.refit_epochs * refit_scale, REFIT_BUDGET_SHARE * cfg.budget_seconds)
    elapsed = now - t_start
    stop = elapsed + eval_seconds + refit > cfg.budget_seconds
    skip = stop and evaluated and (elapsed + eval_seconds > cfg.budget_seconds or done / n_batches < EVAL_MIN_EPOCH_SHARE)
    share = 1.0
    end = t_start + cfg.budget_seconds - eval_seconds - refit  # where the loop must stop
    begin = t_start if t_loop is None else t_loop
    if cfg.budget_lr_decay and (not max_epochs or begin + max_epochs * epoch_estimate > end):
        share = min(max((end - now) / max(end - begin, 1e-9), 0.0), 1.0)
    holds = max(end - begin, 0.0) / max(epoch_estimate, 1e-9)
    flag = torch.tensor([float(stop), float(skip), share, holds], dtype=torch.float64, device=device)
    if world > 1:
        dist.broadcast(flag, 0)
    return bool(flag[0]), bool(flag[1]), float(flag[2]), float(flag[3])


def _refit_pool(cfg: MTRLConfig, win: Windows, early: dict, t_start: float, world: int, device: torch.device) -> tuple[np.ndarray, str] | None:
    """(windows, note) for a refit whose budget cannot pass over every window, or None where it
    can (or the early-stopped run's pace or data end is unknown). The refit exists to learn the
    days early stopping held out, so its windows are every one that predicts a step newer than
    the early-stopped run's data, then a seeded sample of the older ones filling what is left
    of the budget at that run's pace (`position_seconds`, per real position: recent windows
    are the full ones); a random part of an epoch would leave the newest days half learnt.
    Rank 0 sizes it for all ranks."""
    pace, end = early.get("position_seconds"), early.get("data_end_us")
    if not pace or end is None:
        return None
    loop = cfg.budget_seconds - (time.perf_counter() - t_start)
    # int64: a 10M-event log has more positions than float32 counts exactly
    fits = torch.tensor([int(max(loop, 0.0) / pace)], dtype=torch.int64, device=device)
    if world > 1:
        dist.broadcast(fits, 0)
    n = int(fits[0])  # positions the budget holds
    if n >= int(win.length.sum()):
        return None
    is_new = win.last_ts > end
    old_mean = float(win.length[~is_new].mean()) if (~is_new).any() else 1.0
    picked = warm_windows(cfg, win, early, replay=int((n - int(win.length[is_new].sum())) / old_mean))
    if isinstance(picked, str):
        return None
    new, replay = picked
    note = (f"refit on {len(new)} new and {len(replay)} older of {len(win)} windows: the {cfg.budget_seconds:.0f} s "
            f"left hold about {n} positions at the early-stopped run's pace; the learning rate falls to nothing over them")  # fmt: skip
    return np.concatenate([new, replay]), note


# One evaluation may take at most this share of the training budget: an evaluation over a
# catalogue of a million items costs minutes for 20,000 users, and its cost cannot be learned
# from a first evaluation that already spent it. Users evaluated are cut to fit.
EVAL_BUDGET_SHARE = 0.1
# The two probe sizes that time an evaluation before training: the difference of their times is
# the cost per user, and what is left of the larger the fixed cost (the item table).
PROBE_USERS = (64, 256)


def _fit_evaluation(net: MTRLNet, cases: EvalCases, default_type: int, cfg: MTRLConfig) -> tuple[EvalCases, float, str]:
    """(cases, seconds, note): the validation cases an evaluation within EVAL_BUDGET_SHARE of the
    budget can hold, a random subset where all of them cannot, with the estimated seconds of one
    evaluation and a note when users were cut. Timed on two small subsets before the first step
    (the weights do not change the cost); sets no larger than the probe are not timed."""
    small, large = PROBE_USERS
    n = len(cases.histories)
    if n <= large:
        return cases, 0.0, ""
    times = []
    for size in PROBE_USERS:
        t0 = time.perf_counter()
        evaluate(net, _subset(cases, size, cfg.seed + size), default_type)
        times.append(time.perf_counter() - t0)
    per_user = max(times[1] - times[0], 0.0) / (large - small)
    fixed = max(times[1] - per_user * large, 0.0)
    allowed = EVAL_BUDGET_SHARE * cfg.budget_seconds
    fits = fixed + per_user * n <= allowed or per_user <= 0
    keep = n if fits else max(large, int((allowed - fixed) / per_user))
    if keep >= n:
        return cases, fixed + per_user * n, ""
    note = (f"validation on {keep} of {n} users: an evaluation of all of them would take about "
            f"{fixed + per_user * n:.0f} s, more than {EVAL_BUDGET_SHARE:.0%} of the {cfg.budget_seconds:g} s budget")  # fmt: skip
    return _subset(cases, keep, cfg.seed), fixed + per_user * keep, note


def _cpu_state(net: MTRLNet) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


def _build(cfg: MTRLConfig, n_items: int, text: torch.Tensor | None, init, notes: list[str]) -> MTRLNet:
    net = _warm(cfg, n_items, text, init, notes) if init is not None else None
    return _fresh(cfg, n_items, text) if net is None else net


def _warm(cfg: MTRLConfig, n_items: int, text: torch.Tensor | None, init, notes: list[str]) -> MTRLNet | None:
    """The champion grown to `n_items`, or None (with a note) where it cannot seed `cfg`."""
    old, _ = init
    net = MTRLNet(cfg, old.n_items, 0 if text is None else text.shape[1])
    try:
        net.load_state_dict(old.state_dict(), strict=True)
    except RuntimeError as err:  # a different architecture: the champion cannot seed it
        notes.append(f"warm start skipped, champion incompatible: {str(err).splitlines()[0]}")
        return None
    net.grow_items(n_items, text)
    notes.append(f"warm start: {old.n_items} items from the champion, {n_items - old.n_items} new from text")
    return net


def _fresh(cfg: MTRLConfig, n_items: int, text: torch.Tensor | None) -> MTRLNet:
    net = MTRLNet(cfg, n_items, 0 if text is None else text.shape[1])
    net.has_id.zero_()  # filled from the training data by the caller
    if text is not None and net.text_proj is not None:
        net.text[: len(text)] = text[:n_items]
    return net
