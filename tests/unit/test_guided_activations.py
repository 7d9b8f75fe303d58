"""The generalised guided rule ``grad_in = f'(x) * max(grad_out, 0)`` at every kind of activation.

Each derivative ``f'`` below is written out by hand (closed form), independent of torch's autograd.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers.activations import GELUTanh, QuickGELU
from torch import nn

import camlens

W = torch.tensor([[1.0, -1.0, 2.0, 0.3], [0.5, 1.0, -1.0, -0.7], [-2.0, 0.5, 1.0, 0.2]], dtype=torch.float64)
C = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
X = torch.tensor([[-2.1, -0.4, 0.7, 2.6], [1.3, -1.7, 0.2, -0.05]], dtype=torch.float64)


def sig(x: torch.Tensor) -> torch.Tensor:
    return 1 / (1 + torch.exp(-x))


def d_gelu(x):
    return 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def d_gelu_tanh(x):
    k = math.sqrt(2 / math.pi)
    u = k * (x + 0.044715 * x**3)
    t = torch.tanh(u)
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)


def d_silu(x):
    s = sig(x)
    return s * (1 + x * (1 - s))


def d_hardswish(x):
    return torch.where(x < -3, 0.0, torch.where(x > 3, 1.0, (2 * x + 3) / 6))


def d_mish(x):
    sp = torch.log1p(torch.exp(x))
    t = torch.tanh(sp)
    return t + x * (1 - t * t) * sig(x)


def d_leaky(x, slope=0.1):
    return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, slope))


def d_elu(x, alpha=1.0):
    return torch.where(x > 0, 1.0, alpha * torch.exp(x))


def d_softplus(x, beta=1.0):
    return sig(beta * x)


def d_quick_gelu(x):
    s = sig(1.702 * x)
    return s + 1.702 * x * s * (1 - s)


def d_selu(x):
    alpha, scale = 1.6732632423543772, 1.0507009873554805
    return scale * torch.where(x > 0, 1.0, alpha * torch.exp(x))


# (name, activation as called in forward, hand derivative, kind reported)
CASES = [
    ("gelu_module", nn.GELU(), d_gelu, "gelu"),
    ("gelu_functional", F.gelu, d_gelu, "gelu"),
    ("gelu_tanh_module", nn.GELU(approximate="tanh"), d_gelu_tanh, "gelu_tanh"),
    ("gelu_tanh_timm", GELUTanh(), d_gelu_tanh, "gelu_tanh"),
    ("silu_module", nn.SiLU(), d_silu, "silu"),
    ("silu_inplace", nn.SiLU(inplace=True), d_silu, "silu"),
    ("silu_functional", F.silu, d_silu, "silu"),
    ("swish_written_out", lambda v: v * torch.sigmoid(v), d_silu, "silu"),
    ("swish_method_inplace", lambda v: v.mul_(v.sigmoid()), d_silu, "silu"),
    ("hardswish_module", nn.Hardswish(), d_hardswish, "hardswish"),
    ("hardswish_inplace", nn.Hardswish(inplace=True), d_hardswish, "hardswish"),
    ("mish_module", nn.Mish(), d_mish, "mish"),
    ("mish_functional", F.mish, d_mish, "mish"),
    ("leaky_relu_module", nn.LeakyReLU(0.1), d_leaky, "leaky_relu"),
    ("leaky_relu_inplace", nn.LeakyReLU(0.1, inplace=True), d_leaky, "leaky_relu"),
    ("leaky_relu_functional_", lambda v: F.leaky_relu_(v, 0.1), d_leaky, "leaky_relu"),
    ("elu_module", nn.ELU(), d_elu, "elu"),
    ("elu_inplace", nn.ELU(inplace=True), d_elu, "elu"),
    ("softplus_module", nn.Softplus(), d_softplus, "softplus"),
    ("quick_gelu_timm", QuickGELU(), d_quick_gelu, "quick_gelu"),
    ("selu_module", nn.SELU(), d_selu, "selu"),
]


class TwoActs(nn.Module):
    """score = sum_j c_j act(sum_i W_ji act(x_i))."""

    def __init__(self, act) -> None:
        super().__init__()
        self.act = act
        self.register_buffer("w", W.clone())
        self.register_buffer("c", C.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(x.flatten(1) * 1)  # * 1: an in-place activation must not touch the input
        z = self.act(h @ self.w.T)
        return (z * self.c).sum(dim=1, keepdim=True)


def guided_by_hand(x: torch.Tensor, act, derivative) -> torch.Tensor:
    x = x.flatten(1)
    h = act(x.clone())
    z = h @ W.T
    grad_z = derivative(z) * torch.relu(C).expand_as(z)  # f'(z) * max(grad_out, 0), grad_out = c
    grad_h = grad_z @ W
    return derivative(x) * torch.relu(grad_h)


@pytest.mark.parametrize(("name", "act", "derivative", "kind"), CASES, ids=[c[0] for c in CASES])
def test_generalised_rule_element_wise(name, act, derivative, kind):
    model = TwoActs(act).double().eval()
    x = X.view(2, 1, 1, 4)
    result = camlens.explain(model, x, ["guided_backprop"], targets=0)
    expected = guided_by_hand(X, act, derivative).view(2, 1, 1, 4)
    torch.testing.assert_close(result["guided_backprop"], expected, rtol=1e-9, atol=1e-12)
    assert result.guided_rule == {kind: 2}
    assert result.guided_generalised
    assert result.warnings == ()


def test_true_gradient_unchanged_by_the_routing():
    """Grad-CAM in the same call uses the true derivative: the routed graph is the ordinary one."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 5, 3, padding=1), nn.SiLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3),
    ).eval()  # fmt: skip
    x = torch.rand(2, 3, 6, 6)
    both = camlens.explain(model, x, ["gradcam", "guided_backprop"], "2", targets=1)
    alone = camlens.explain(model, x, ["gradcam"], "2", targets=1)
    torch.testing.assert_close(both.capture.gradients, alone.capture.gradients)
    assert both.guided_rule == {"gelu": 1, "silu": 1}


def test_gates_keep_their_ordinary_gradient():
    """A squeeze-excitation gate (sigmoid / hardsigmoid of a pooled branch) is not an activation of the chain."""

    class SE(nn.Module):
        def __init__(self, gate):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.reduce = nn.Conv2d(4, 4, 1)
            self.gate = gate
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            a = torch.relu(self.conv(x))
            s = self.gate(self.reduce(a.mean(dim=(2, 3), keepdim=True)))
            return self.fc((a * s).mean(dim=(2, 3)))

    x = torch.rand(1, 3, 5, 5, requires_grad=True)
    for gate in (nn.Sigmoid(), nn.Hardsigmoid()):
        model = SE(gate).double().eval()
        xd = x.detach().double()
        result = camlens.explain(model, xd, ["guided_backprop"], targets=0)
        assert result.guided_rule == {"relu": 1}
        assert not result.guided_generalised


def test_no_activation_routed_is_not_silent():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)).eval()
    with pytest.warns(UserWarning, match="no activation"):
        result = camlens.explain(model, torch.rand(1, 3, 6, 6), ["guided_backprop"])
    assert result.guided_rule == {}
    assert any("plain input gradient" in w for w in result.warnings)
