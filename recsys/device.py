"""The one answer to "which device?" for training, scoring and text encoding.

`auto` is CUDA when torch sees a GPU, else the CPU; `cuda` without a GPU is an error rather
than a silent fall back to a CPU run many times slower. Under torchrun each process takes the
GPU of its LOCAL_RANK.
"""

from __future__ import annotations

import os

import torch

from recsys.errors import ConfigError

CHOICES = ("auto", "cpu", "cuda")


def resolve_device(preference: str | torch.device = "auto") -> torch.device:
    if isinstance(preference, torch.device):
        return preference
    name = str(preference).split(":")[0]
    if name not in CHOICES:
        raise ConfigError(f"device {preference!r}: expected one of {', '.join(CHOICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch sees no GPU (set RECSYS_DEVICE=cpu or auto)")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if ":" in str(preference):
        return torch.device(preference)
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
