#!/usr/bin/env bash
# GPU check of the multi-task RL recommender, for a machine with CUDA (under 5 minutes).
#
#   scripts/gpu_check.sh                 # from anywhere; runs in the project root
#   STEPS=500 scripts/gpu_check.sh       # more steps
#
# 1. the project's .venv via `make install` (skipped when it exists), 2. a CUDA build of the
# locked torch version when the installed one cannot see the GPU (TORCH_INDEX picks the
# wheel index; pip's own PIP_FIND_LINKS / PIP_INDEX_URL work for offline wheelhouses),
# 3. generates a synthetic log (SIZE, default about one million events) and builds its features
# and item text vectors with the nightly stages, trains the `full` preset for STEPS steps in
# bf16 and prints throughput, peak GPU memory, epoch time and the first and last loss. Exits
# non-zero when CUDA is missing or the loss did not fall. GPU_CHECK_ALLOW_CPU=1 runs step 3 on
# the CPU (a dry run; give it a small SIZE, e.g. SIZE=users=500,items=300,days=10).
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS="${STEPS:-300}"
SIZE="${SIZE:-users=15000,items=5000,days=30}"
TORCH_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}"
PY=.venv/bin/python
START=$(date +%s)

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
    echo "gpu_check: nvidia-smi not found"
fi

# 1. the project environment
if [ ! -x "$PY" ]; then
    echo "gpu_check: make install"
    make install
fi

# 2. a torch that sees the GPU
if [ "${GPU_CHECK_ALLOW_CPU:-0}" != "1" ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    version=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
    echo "gpu_check: installing the CUDA build of torch $version from $TORCH_INDEX"
    "$PY" -m pip install --quiet --force-reinstall "torch==$version" --index-url "$TORCH_INDEX" \
        || { echo "gpu_check: could not install a CUDA torch (no network? set PIP_FIND_LINKS to a wheelhouse)"; exit 1; }
    "$PY" -c "import torch; assert torch.cuda.is_available(), 'torch still sees no CUDA device'"
fi
echo "gpu_check: environment ready after $(( $(date +%s) - START )) s"

# 3. train a few hundred steps in bf16 on generated data
"$PY" - "$STEPS" "$SIZE" <<'PYEOF'
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recsys.benchmark import prepare
from recsys.config import get_settings
from recsys.data.interactions import load_interactions
from recsys.evaluate.protocol import validation_cases
from recsys.models.mtrl.config import make_config
from recsys.models.mtrl.train import train

steps, size = int(sys.argv[1]), sys.argv[2]
cuda = torch.cuda.is_available()
device = "cuda" if cuda else "cpu"
t0 = time.perf_counter()
# The nightly stages build the data: generate, validate, features (temporal split), and the
# packaged MiniLM's item text vectors (on the GPU when there is one).
ds, lake, _ = prepare("synthetic", Path(size), "temporal", get_settings(), Path(tempfile.mkdtemp(prefix="gpu-check-")))
data = load_interactions(lake.features(ds))
text = np.load(lake.embeddings(ds) / "item_text.npy")
print(f"gpu_check: data + text ready in {time.perf_counter() - t0:.1f} s "
      f"({len(data.item)} events, {data.n_items} items, text {text.shape})")

cfg = make_config("full", device=device, amp=True, max_steps=steps, max_epochs=10**6, patience=10**6)
if cuda:
    torch.cuda.reset_peak_memory_stats()
art = train(cfg, data.in_splits("train"), validation_cases(data), text=text, progress=False)
meta = art.meta
hist = meta["history"]
curve = meta["loss_curve"]
steady = hist[1:] or hist  # the first epoch pays for CUDA start-up
report = {
    "device": torch.cuda.get_device_name(0) if cuda else "cpu",
    "bf16_autocast": bool(cuda and cfg.amp),
    "steps": hist[-1]["step"],
    "epochs": len(hist),
    "seq_per_s": round(float(np.mean([h["seq_per_s"] for h in steady])), 1),
    "epoch_s": round(float(np.mean([h["seconds"] for h in steady])), 3),
    "peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
    "loss_first": curve[0][1],
    "loss_last": curve[-1][1],
    "valid_ndcg@10_best": meta.get("best_ndcg10"),
    "tasks": meta["tasks"],
    "train_s": meta["seconds"],
}
print("gpu_check:", json.dumps(report))
if cfg.device == "cuda" and not cuda:
    sys.exit("gpu_check: no CUDA device")
if not report["loss_last"] < report["loss_first"]:
    sys.exit("gpu_check: the loss did not fall")
PYEOF
echo "gpu_check: done in $(( $(date +%s) - START )) s"
