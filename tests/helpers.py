"""Shared test helpers: seed architectures, model snapshots, correlation."""

from __future__ import annotations

import functools

import torch
import torchvision
from torch import nn

from camlens.zoo import SEED_NETWORKS, Network

SEED_ARCHS = list(SEED_NETWORKS)

# Small inputs keep the suite fast; inception_v3 needs at least 75 pixels.
INPUT_SIZE = {"inception_v3": 96}
DEFAULT_SIZE = 64


def input_size(arch: str) -> int:
    return INPUT_SIZE.get(arch, DEFAULT_SIZE)


def build(arch: str, seed: int = 0) -> nn.Module:
    """A randomly initialised seed architecture in eval mode (fresh object each call).

    Batch-norm statistics are calibrated on one random batch, so that activations keep a realistic
    scale in eval mode (with running stats of 0 and 1, random inception_v3 maps vanish to ~1e-9).
    """
    torch.manual_seed(seed)
    if arch == "efficientnet_lite0":
        import timm

        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    else:
        kwargs = {"aux_logits": False, "init_weights": False} if arch == "inception_v3" else {}
        model = getattr(torchvision.models, arch)(weights=None, **kwargs)
    return calibrate_norms(model, max(input_size(arch), 96))


def calibrate_norms(model: nn.Module, size: int = 96) -> nn.Module:
    """Set every batch norm's running statistics from one random batch ``(4, 3, size, size)``; eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.momentum = 1.0
        model.train()
        with torch.no_grad():
            model(torch.rand(4, 3, size, size))
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
    return model.eval()


@functools.cache
def cached(arch: str) -> nn.Module:
    """One shared instance per architecture, for tests that prove they leave it untouched."""
    return build(arch)


def snapshot(model: nn.Module) -> dict:
    """Everything about a model that explaining it must not change."""
    modules = list(model.modules())
    return {
        "ids": [id(m) for m in modules],
        "types": [type(m) for m in modules],
        "training": [m.training for m in modules],
        "inplace": [getattr(m, "inplace", None) for m in modules],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), len(m._backward_pre_hooks))
            for m in modules
        ],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }


def assert_untouched(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    for key in ("ids", "types", "training", "inplace", "hooks", "requires_grad"):
        assert after[key] == before[key], f"model {key} changed"
    for g0, g1 in zip(before["grad"], after["grad"], strict=True):
        assert (g0 is None and g1 is None) or (g0 is not None and g1 is not None and torch.equal(g0, g1)), (
            "grad changed"
        )
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), f"{k} changed"


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.detach().double().flatten()
    b = b.detach().double().flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples"


def tiny_viewer_network() -> Network:
    """A 6-class random-weight CNN at 32 px, labelled "thing 0".."thing 5": the viewer's tests' network."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 6),
    ).eval()
    return Network("tiny", model, (32, 32), labels=[f"thing {i}" for i in range(6)])
