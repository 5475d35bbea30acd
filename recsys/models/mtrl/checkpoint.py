"""Checkpoints: one safetensors file with the weights, and its metadata carrying everything else.

The metadata (JSON under the key `mtrl`) holds the config, the catalogue size and optional
item-id map, the training step and epoch, a fingerprint of the training data and the
validation history. Loading never unpickles anything: safetensors holds plain tensors only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from recsys.data.interactions import Interactions
from recsys.errors import ConfigError
from recsys.models.mtrl.config import MTRLConfig
from recsys.models.mtrl.model import MTRLNet

FORMAT = "mtrl/1"
WEIGHTS_FILE = "weights.safetensors"


def fingerprint(data: Interactions) -> str:
    """sha256 over the training arrays (user, item, event, ts, rating, split): same data, same hash."""
    h = hashlib.sha256()
    for a in (data.user, data.item, data.event, data.ts, data.rating, data.split):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(str(data.n_items).encode())
    return h.hexdigest()[:16]


def save_checkpoint(file: Path, net: MTRLNet, meta: dict) -> None:
    """Write weights + metadata atomically (a temporary file renamed into place)."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    info = {
        "format": FORMAT,
        "config": net.cfg.to_dict(),
        "n_items": net.n_items,
        "text_dim": int(net.text.shape[1]),
        **meta,
    }
    tmp = file.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"mtrl": json.dumps(info, default=_plain)})
    tmp.replace(file)


def load_checkpoint(file: Path, device: str = "cpu") -> tuple[MTRLNet, dict]:
    """-> (network with the saved weights, metadata dict)."""
    file = Path(file)
    if not file.exists():
        raise ConfigError(f"{file}: no such checkpoint")
    with safe_open(str(file), framework="pt", device=device) as f:
        meta = json.loads((f.metadata() or {}).get("mtrl", "{}"))
        if meta.get("format") != FORMAT:
            raise ConfigError(f"{file}: not an {FORMAT} checkpoint")
        state = {k: f.get_tensor(k) for k in f.keys()}
    net = MTRLNet(MTRLConfig.from_dict(meta["config"]), meta["n_items"], meta["text_dim"]).to(device)
    net.load_state_dict(state, strict=True)
    return net, meta


def _plain(x):
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, torch.Tensor):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
