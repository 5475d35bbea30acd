"""Training on several processes from the nightly stage: torchrun (PyTorch DDP) as a child.

The stage hands over what it would give `MTRLModel` in-process; torchrun's rank 0 saves the
model folder, which the stage then loads, registers and reports like a single-process fit.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from recsys.errors import RecsysError
from recsys.models.mtrl.checkpoint import WEIGHTS_FILE

log = logging.getLogger(__name__)

# MTRLModel arguments that travel as flags of `python -m recsys.models.mtrl`; the rest are
# MTRLConfig settings (`--set KEY=VALUE`).
FLAGS = {"preset": "--preset", "text_path": "--text", "init_from": "--init"}


def train_processes(setting: int) -> int:
    """RECSYS_TRAIN_PROCS: N as given; 0 = one per visible GPU, one process on a CPU."""
    if setting > 0:
        return setting
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def torchrun_command(procs: int, features: Path, out: Path, params: dict, n_items: int, refit: bool) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
           "-m", "recsys.models.mtrl", "--features", str(features), "--out", str(out), "--n-items", str(n_items)]
    for key, flag in FLAGS.items():
        if params.get(key) is not None:
            cmd += [flag, str(params[key])]
    if refit:
        cmd.append("--refit")
    settings = [f"{k}={json.dumps(v)}" for k, v in params.items() if k not in FLAGS and v is not None]
    return cmd + (["--set", *settings] if settings else [])


def fit_distributed(procs: int, features: Path, out: Path, params: dict, n_items: int, refit: bool = True) -> None:
    """Train with `procs` DDP processes on this machine; the model folder appears at `out`.

    The children's output goes to this process's output (the task log). RecsysError when
    torchrun fails or rank 0 saved nothing.
    """
    cmd = torchrun_command(procs, features, out, params, n_items, refit)
    log.info("training on %d processes: %s", procs, " ".join(cmd))
    sys.stdout.flush(), sys.stderr.flush()
    code = subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode
    if code != 0:
        raise RecsysError(f"distributed training (torchrun, {procs} processes) exited with code {code}; its log is above")
    if not (Path(out) / WEIGHTS_FILE).exists():
        raise RecsysError(f"{out}: distributed training finished but rank 0 saved no model")
