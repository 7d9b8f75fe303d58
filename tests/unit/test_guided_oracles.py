"""Guided backprop oracle tests on hand-weighted models: every kind of ReLU the forward may run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camlens

W1 = torch.tensor([[1.0, -1.0, 2.0], [0.5, 1.0, -1.0], [-2.0, 0.5, 1.0]])
C = torch.tensor([1.0, -2.0, 0.5])


def guided_by_hand(x: torch.Tensor, upper: float | None) -> torch.Tensor:
    """f(x) = sum_j c_j act(sum_i W_ji act(x_i)), act = ReLU or clamp(0, upper); guided rule at both acts."""
    x = x.double().flatten()
    W, c = W1.double(), C.double()

    def passes(v: float) -> bool:
        return v > 0 and (upper is None or v < upper)

    def act(v: float) -> float:
        return min(max(v, 0.0), upper) if upper is not None else max(v, 0.0)

    h = [act(float(v)) for v in x]
    z = [sum(float(W[j, i]) * h[i] for i in range(3)) for j in range(3)]
    # backward: grad_out at the outer act is c_j
    grad_z = [float(c[j]) if passes(z[j]) and c[j] > 0 else 0.0 for j in range(3)]
    grad_h = [sum(grad_z[j] * float(W[j, i]) for j in range(3)) for i in range(3)]
    grad_x = [grad_h[i] if passes(float(x[i])) and grad_h[i] > 0 else 0.0 for i in range(3)]
    return torch.tensor(grad_x, dtype=torch.float64)


class TwoLayer(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.relu_inplace = nn.ReLU(inplace=True)
        self.relu = nn.ReLU()
        self.relu6 = nn.ReLU6(inplace=True)
        self.hardtanh06 = nn.Hardtanh(0.0, 6.0)
        self.register_buffer("w1", W1.clone())
        self.register_buffer("c", C.clone())

    def act(self, v: torch.Tensor) -> torch.Tensor:
        kind = self.kind
        if kind == "module":
            return self.relu(v)
        if kind == "module_inplace":
            return self.relu_inplace(v * 1)
        if kind == "functional":
            return F.relu(v)
        if kind == "functional_inplace":
            return F.relu(v * 1, inplace=True)
        if kind == "torch_relu":
            return torch.relu(v)
        if kind == "torch_relu_":
            return torch.relu_(v * 1)
        if kind == "tensor_method":
            return v.relu()
        if kind == "tensor_method_":
            return (v * 1).relu_()
        if kind == "relu6_module":
            return self.relu6(v * 1)
        if kind == "relu6_functional":
            return F.relu6(v)
        if kind == "hardtanh06":
            return self.hardtanh06(v)
        raise AssertionError(kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)
        h = self.act(v)
        z = self.act(h @ self.w1.T)
        return (z * self.c).sum(dim=1, keepdim=True)


RELU_KINDS = [
    "module",
    "module_inplace",
    "functional",
    "functional_inplace",
    "torch_relu",
    "torch_relu_",
    "tensor_method",
    "tensor_method_",
]
BOUNDED_KINDS = ["relu6_module", "relu6_functional", "hardtanh06"]


@pytest.mark.parametrize("kind", RELU_KINDS + BOUNDED_KINDS)
@pytest.mark.parametrize("seed", range(4))
def test_guided_rule_at_every_relu_kind(kind, seed):
    torch.manual_seed(seed)
    x = (torch.randn(1, 1, 1, 3) * 4).double()
    model = TwoLayer(kind).double().eval()
    upper = 6.0 if kind in BOUNDED_KINDS else None
    got = camlens.GuidedBackprop(model)(x, targets=0)
    torch.testing.assert_close(got.flatten(), guided_by_hand(x, upper))


def test_guided_differs_from_plain_gradient_where_grad_out_is_negative():
    x = torch.tensor([[[[1.0, 1.0, 1.0]]]])
    model = TwoLayer("functional").eval()
    guided = camlens.GuidedBackprop(model)(x, targets=0)
    xr = x.clone().requires_grad_()
    model(xr).sum().backward()
    assert not torch.allclose(guided, xr.grad)
    assert (guided >= 0).all()  # all negative signals are cut at the first layer here


def test_other_hardtanh_keeps_ordinary_gradient():
    class Clip(nn.Module):
        def forward(self, x):
            return (F.hardtanh(x.flatten(1), -1.0, 1.0) * torch.tensor([1.0, -1.0, 1.0])).sum(1, keepdim=True)

    x = torch.tensor([[[[0.5, 0.5, 2.0]]]])
    got = camlens.GuidedBackprop(Clip().eval())(x, targets=0)
    # not a ReLU: the true derivative, negative part included
    torch.testing.assert_close(got.flatten(), torch.tensor([1.0, -1.0, 0.0]))


def test_guided_gradcam_is_product():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    result = camlens.explain(model, x, target_layer="3", targets=[0, 2])
    torch.testing.assert_close(result["guided_gradcam"], result["guided_backprop"] * result["gradcam"][:, None])
    torch.testing.assert_close(camlens.GuidedGradCAM(model, "3")(x, [0, 2]), result["guided_gradcam"])
