"""Devices, checked mixed precision and pinned transfers (camlens.device)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camlens
from camlens.device import autocast_dtype, resolve_device, to_device
from camlens.errors import UsageError
from camlens.precision import pick_precision, precision_deviation


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_device_errors_say_what_to_do(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(UsageError, match="unknown device 'gpu7'"):
        resolve_device("gpu7")
    with pytest.raises(UsageError, match="no CUDA"):
        resolve_device("cuda:0")
    with pytest.raises(UsageError, match="use bfloat16 or float32"):
        autocast_dtype("float16", torch.device("cpu"))
    with pytest.raises(UsageError, match="choose from float32, bfloat16, float16"):
        autocast_dtype("fp8", torch.device("cpu"))
    assert autocast_dtype("float32", torch.device("cpu")) is None
    assert autocast_dtype("float16", torch.device("cuda")) is torch.float16


def test_transfer_to_cpu_is_the_batch_itself():
    batch = torch.rand(2, 3, 8, 8)
    assert to_device(batch, torch.device("cpu")) is batch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_transfer_to_cuda_goes_through_pinned_memory():
    batch = torch.rand(2, 3, 8, 8)
    moved = to_device(batch, torch.device("cuda"))
    assert moved.device.type == "cuda" and torch.equal(moved.cpu(), batch) and not batch.is_pinned()


class ExactInBfloat16(nn.Module):
    """Integer weights and inputs, sums below 256: every product and sum is exact in bfloat16."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 2, bias=False)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[1.0, -1.0], [2.0, 0.0]]], [[[0.0, 1.0], [1.0, 1.0]]]]))
            self.fc.weight.copy_(torch.tensor([[1.0, 2.0], [2.0, -1.0], [-1.0, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def test_bfloat16_on_an_exact_model_gives_the_float32_maps_and_really_runs_in_bfloat16():
    model = ExactInBfloat16().eval()
    x = torch.tensor([[0.0, 1.0, 2.0], [3.0, 1.0, 0.0], [2.0, 2.0, 1.0]])[None, None]
    seen: list[torch.dtype] = []
    handle = model.conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    try:
        reference = camlens.explain(model, x, target_layer="relu")
        mixed = camlens.explain(model, x, target_layer="relu", precision="bfloat16")
    finally:
        handle.remove()
    assert seen == [torch.float32, torch.bfloat16]  # the network ran under autocast the second time
    for name in camlens.SEED_METHODS:
        assert mixed[name].dtype == torch.float32 and torch.equal(mixed[name], reference[name]), name
    assert precision_deviation(model, x, "bfloat16", target_layer="relu") == dict.fromkeys(camlens.SEED_METHODS, 0.0)
    assert pick_precision(model, x, "bfloat16", target_layer="relu") == "bfloat16"
    assert model.conv.weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")


@pytest.mark.slow
def test_bfloat16_on_the_bundled_model_is_not_within_1e_3_so_it_is_declined():
    """The check the issue asks for, on CPU bfloat16: the bundled model's maps move too far, float32 is kept."""
    from camlens.images import read_image, to_batch
    from camlens.zoo import load_network

    network = load_network()
    x = to_batch([read_image("examples/cat.jpg")], (96, 96), network.mean, network.std)
    methods = ["gradcam", "guided_backprop"]
    deviation = precision_deviation(network.model, x, "bfloat16", methods)
    assert deviation["gradcam"] > 1e-3 and deviation["guided_backprop"] > 1e-3, deviation
    assert pick_precision(network.model, x, "bfloat16", methods) == "float32"
