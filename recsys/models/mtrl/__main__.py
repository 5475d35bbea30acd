"""Train the multi-task model on a features folder, on one process or many under torchrun (DDP):

    torchrun --nproc_per_node=2 -m recsys.models.mtrl \\
        --features var/lake/features/ds=2026-11-27 --out var/models/mtrl-dev --set max_epochs=5

Rank 0 saves the model folder (what `recsys.models.load_model` reads). The nightly train stage
starts this itself when RECSYS_TRAIN_PROCS asks for several processes (see `launch.py`), with
`--refit`, `--init` and `--n-items` so the result is the model the single-process stage fits.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch.distributed as dist

from recsys.models.mtrl.config import parse_setting


def main(argv: list[str] | None = None) -> None:
    """Train on a features folder (train split; valid split for early stopping); rank 0 saves."""
    from recsys.data.interactions import load_interactions
    from recsys.evaluate.protocol import validation_cases
    from recsys.models.mtrl.recommender import MTRLModel

    ap = argparse.ArgumentParser(prog="python -m recsys.models.mtrl", description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--text", type=Path, default=None, help="item_text.npy, row i = item_idx i")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--init", type=Path, default=None, help="a saved mtrl model folder to warm-start from")
    ap.add_argument("--n-items", type=int, default=None, help="catalogue size (default: the items seen in the events)")
    ap.add_argument("--refit", action="store_true", help="after early stopping, refit on train + valid (as the nightly stage)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    overrides = dict(parse_setting(kv) for kv in args.set)
    model = MTRLModel(args.preset, text_path=str(args.text) if args.text else None,
                      init_from=str(args.init) if args.init else None, **overrides)
    data = load_interactions(args.features, n_items=args.n_items)
    refit = data.in_splits("train", "valid") if args.refit else None
    model.fit(data.in_splits("train"), validation_cases(data), refit_data=refit)
    if int(os.environ.get("RANK", 0)) == 0:
        model.save(args.out)
        print(model.meta.get("history", [])[-1] if model.meta.get("history") else {})
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
