"""The contract every method keeps on every seed architecture (random weights, small inputs)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import camlens
from helpers import SEED_ARCHS, assert_untouched, cached, input_size, snapshot

METHODS = {
    "gradcam": camlens.GradCAM,
    "gradcam++": camlens.GradCAMPlusPlus,
    "guided_backprop": camlens.GuidedBackprop,
    "guided_gradcam": camlens.GuidedGradCAM,
}


def make(method: str, model: nn.Module) -> camlens.explanation.__class__:
    return METHODS[method](model)


def images(arch: str, batch: int = 3, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    size = input_size(arch)
    return torch.rand(batch, 3, size, size)


# the VGGs (138-144M parameters) build and run slowly on a CPU: full suite only
SEED_ARCH_PARAMS = [pytest.param(a, marks=pytest.mark.slow) if a.startswith("vgg") else a for a in SEED_ARCHS]


@pytest.mark.parametrize("arch", SEED_ARCH_PARAMS)
@pytest.mark.parametrize("method", list(METHODS))
def test_shapes_range_untouched_and_batch_equals_singles(arch, method):
    model = cached(arch)
    before = snapshot(model)
    x = images(arch)
    x_before = x.clone()
    explainer = make(method, model)
    classes = [1, 5, 7]
    batch = explainer(x, targets=classes)
    assert_untouched(model, before)
    assert torch.equal(x, x_before), "input modified"
    size = input_size(arch)
    if method in ("gradcam", "gradcam++"):
        assert batch.shape == (3, size, size)
        assert batch.min() >= 0 and batch.max() <= 1
    else:
        assert batch.shape == (3, 3, size, size)
    assert torch.isfinite(batch).all()
    assert batch.dtype == x.dtype and batch.device == x.device
    assert_untouched(model, before)
    # batch of N == N singles, compared in float64 to 1e-9 of the maximum: in float32 the kernels'
    # summation order differs between batch sizes (ResNet-50's Grad-CAM then differs by 3e-4 of its
    # maximum on some machines) and the guided rule's sign thresholds flip near-zero gradients.
    explainer, x = make(method, copy.deepcopy(model).double()), x.double()
    batch, tolerance = explainer(x, targets=classes), 1e-9
    singles = torch.cat([explainer(x[i : i + 1], targets=classes[i]) for i in range(3)])
    scale = singles.abs().max().clamp_min(1e-12)
    torch.testing.assert_close(batch / scale, singles / scale, atol=tolerance, rtol=0)


class Raising(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom inside the model")


@pytest.mark.parametrize("arch", ["resnet18", "densenet121", "mobilenet_v2", "inception_v3"])
@pytest.mark.parametrize("method", list(METHODS))
def test_model_untouched_after_a_raising_call(arch, method):
    model = cached(arch)
    before = snapshot(model)
    x = images(arch, batch=2)
    explainer = make(method, model)
    with pytest.raises(ValueError, match="out of range"):
        explainer(x, targets=5000)  # raises after the forward pass, hooks and modes active
    assert_untouched(model, before)
    assert torch.is_grad_enabled()
    # a module that raises inside the forward, while the target layer's hook is registered
    wrapped = nn.Sequential(model, Raising())
    before_wrapped = snapshot(wrapped)
    layer = (
        None
        if method == "guided_backprop"
        else wrapped[0].get_submodule(camlens.explain(model, x[:1], ["gradcam"]).target_layer)
    )
    with pytest.raises(RuntimeError, match="boom"):
        camlens.explain(wrapped, x, [method], target_layer=layer)
    assert_untouched(wrapped, before_wrapped)
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("arch", ["resnet18", "squeezenet1_1", "efficientnet_lite0"])
def test_one_explain_equals_separate_calls(arch):
    model = cached(arch)
    x = images(arch, batch=2)
    together = camlens.explain(model, x, targets=[3, 4])
    for name, cls in METHODS.items():
        alone = cls(model)(x, targets=[3, 4])
        torch.testing.assert_close(together[name], alone, atol=1e-5, rtol=1e-4)
    assert list(together) == list(camlens.SEED_METHODS)
    assert together.logits.shape == (2, 1000)
    assert together.classes.tolist() == [3, 4]


@pytest.mark.parametrize("method", list(METHODS))
def test_dead_target_and_zero_gradients_give_zeros_not_nan(method):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()
    with torch.no_grad():
        model[4].weight[1].zero_()  # class 1 ignores every feature: all gradients are zero
    x = torch.rand(2, 3, 8, 8)
    out = METHODS[method](model)(x, targets=1)
    assert torch.isfinite(out).all()
    assert torch.count_nonzero(out) == 0
    # a dead layer: every activation is zero (ReLU of a very negative bias)
    with torch.no_grad():
        model[0].bias.fill_(-1e6)
    out = METHODS[method](model)(x, targets=0)
    assert torch.isfinite(out).all()
    if method in ("gradcam", "gradcam++"):
        assert torch.count_nonzero(out) == 0


def test_float64_kept():
    model64 = copy.deepcopy(cached("resnet18")).double()
    x = images("resnet18", batch=1).double()
    for name, cls in METHODS.items():
        out = cls(model64)(x)
        assert out.dtype == torch.float64, name


def test_cuda_device_kept_when_available():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    model = cached("resnet18")
    gpu = copy.deepcopy(model).cuda()
    x = images("resnet18", batch=2).cuda()
    result = camlens.explain(gpu, x)
    cpu = camlens.explain(model, x.cpu())
    for name in METHODS:
        assert result[name].device == x.device
        scale = cpu[name].abs().max()
        torch.testing.assert_close(result[name].cpu() / scale, cpu[name] / scale, atol=1e-3, rtol=0)
