"""Device names resolve to torch devices, or to errors naming what is available."""

from __future__ import annotations

import pytest
import torch

from automl_transfer.errors import AutoMLTransferError
from automl_transfer.training.devices import resolve_device


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_cpu_and_auto_without_a_gpu(no_gpu):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_a_gpu_names_what_is_available(no_gpu, spec):
    with pytest.raises(AutoMLTransferError, match=r"available: cpu\. Use --device cpu"):
        resolve_device(spec)


def test_gpus_resolve_with_their_index(two_gpus):
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_a_missing_gpu_index_lists_the_real_ones(two_gpus):
    with pytest.raises(AutoMLTransferError, match="'cuda:2' does not exist; available: cpu, cuda:0, cuda:1"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "gpu", ""])
def test_unknown_names_say_what_to_type(no_gpu, spec):
    with pytest.raises(AutoMLTransferError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device(spec)
