"""One device resolver for training, scoring and text: what each preference gives on this machine."""

from __future__ import annotations

import pytest
import torch

from recsys.device import resolve_device
from recsys.errors import ConfigError


def test_cpu_and_a_given_device_pass_through():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_takes_the_gpu_of_this_process_when_there_is_one(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_cuda_without_a_gpu_and_unknown_names_are_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="sees no GPU"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="expected one of auto, cpu, cuda"):
        resolve_device("tpu")
