"""``explain(..., create_graph=True)``: maps a loss can train through.

Oracles: ``torch.autograd.gradcheck`` (analytic derivative of the map against central finite differences, in
float64) with respect to the input and to a weight; the map itself equals the one of a plain call; and a CAM
loss (map mass outside a mask) moves a small model's map onto the mask.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camlens
from helpers import assert_untouched, snapshot

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Smooth(nn.Module):
    """conv -> softplus -> conv -> softplus -> GAP -> linear; the second conv's weight may be given from outside
    (a plain tensor, so that gradcheck can vary it). Softplus: no kink for the finite differences to cross."""

    def __init__(self, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1)
        self.act1, self.act2 = nn.Softplus(), nn.Softplus()
        self.fc = nn.Linear(4, 3)
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act1(self.conv1(x))
        w = self.conv2.weight if self.weight is None else self.weight
        a = self.act2(F.conv2d(a, w, self.conv2.bias, padding=1))
        return self.fc(a.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def smooth() -> Smooth:
    torch.manual_seed(0)
    return Smooth().double().eval()


RAW = ["gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam_elementwise"]


def _projected(maps: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Each map against fixed random weights: scalars whose full gradient gradcheck compares (one backward per
    map instead of one per map element; a wrong derivative of any element changes the projection)."""
    g = torch.Generator().manual_seed(7)
    return tuple((m * torch.randn(m.shape, generator=g, dtype=m.dtype)).sum() for m in maps)


def test_the_maps_derivative_with_respect_to_the_input_matches_finite_differences(smooth: Smooth) -> None:
    torch.manual_seed(1)
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)

    def maps(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = camlens.explain(smooth, x, RAW, "act1", 2, create_graph=True)
        return _projected([*(result.raw[name] for name in RAW), result["gradcam"]])

    assert torch.autograd.gradcheck(maps, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)
    assert x.grad is None


def test_the_maps_derivative_with_respect_to_a_weight_matches_finite_differences(smooth: Smooth) -> None:
    torch.manual_seed(2)
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    model = Smooth().double().eval()
    model.load_state_dict(smooth.state_dict())
    first = smooth.conv2.weight[0].detach().clone().requires_grad_(True)  # output channel 0's filter

    def maps(w0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        model.weight = torch.cat([w0[None], smooth.conv2.weight[1:].detach()])
        result = camlens.explain(model, x, ["gradcam", "layercam"], "act1", [1, 0], create_graph=True)
        return _projected([result.raw["gradcam"], result.raw["layercam"], result["gradcam"]])

    assert torch.autograd.gradcheck(maps, (first,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_the_call_writes_no_grad_and_its_maps_equal_a_plain_calls(smooth: Smooth) -> None:
    torch.manual_seed(3)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    before = snapshot(smooth)
    result = camlens.explain(smooth, x, ["gradcam", "gradcam++"], "act1", create_graph=True)
    assert_untouched(smooth, before)
    assert all(p.grad is None for p in smooth.parameters()) and x.grad is None
    plain = camlens.explain(smooth, x.detach(), ["gradcam", "gradcam++"], "act1")
    for name in ("gradcam", "gradcam++"):
        assert result.raw[name].requires_grad and result[name].requires_grad
        torch.testing.assert_close(result.raw[name].detach(), plain.raw[name])
        torch.testing.assert_close(result[name].detach(), plain[name])
    # a loss on the map reaches every parameter it depends on (all but the classifier's bias) and the input
    result.raw["gradcam"].square().sum().backward()
    for name, p in smooth.named_parameters():
        assert (p.grad is None) == (name == "fc.bias"), name
        assert p.grad is None or bool(p.grad.any()), name
    assert x.grad is not None and bool(x.grad.any())
    smooth.zero_grad(set_to_none=True)
    auto = camlens.explain(smooth, x.detach(), ["gradcam"], create_graph=True)  # the automatic layer
    assert auto.raw["gradcam"].requires_grad
    with torch.no_grad():  # the call records its own graph whatever the caller's grad mode
        inside = camlens.explain(smooth, x.detach(), ["gradcam"], "act1", create_graph=True)
    assert inside.raw["gradcam"].requires_grad and inside["gradcam"].requires_grad


def test_what_create_graph_does_not_cover_is_refused(smooth: Smooth) -> None:
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    for methods, options in (
        (["scorecam"], {}),
        (["guided_backprop"], {}),
        (["eigencam"], {}),
        (["gradcam"], {"aug_smooth": True}),
        (["gradcam"], {"eigen_smooth": True}),
    ):
        with pytest.raises(ValueError, match="create_graph"):
            camlens.explain(smooth, x, methods, "act1", create_graph=True, **options)


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("cam_loss", EXAMPLES / "cam_loss.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_cam_loss_moves_the_map_onto_the_mask() -> None:
    """Right for the right reasons (examples/cam_loss.py): both cues separate the classes; trained with the loss
    on the map's mass outside the left half, the map of new scenes lies there, trained without it it does not."""
    example = _example()
    test_x, test_y = example.scenes(1)
    plain, guided = example.train(0.0), example.train(1.0)
    for model in (plain, guided):
        assert bool((model(test_x).argmax(1) == test_y).all())  # both learned the classes
    assert float(example.inside_share(plain, test_x[:4]).mean()) < 0.7
    assert bool((example.inside_share(guided, test_x[:4]) > 0.95).all())
    # the explain call inside the loop writes no gradient: only the loss's backward does
    model = example.Tiny()
    result = camlens.explain(model, test_x[:4], ["gradcam"], "features", 0, create_graph=True)
    assert all(p.grad is None for p in model.parameters())
    example.outside(result.raw["gradcam"], example.left_half()).mean().backward()
    assert all(p.grad is not None for p in model.features.parameters())
