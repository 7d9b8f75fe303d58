"""Oracle tests for Grad-CAM and Grad-CAM++ on hand-weighted models (the paper formulas, by hand)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camlens
from camlens.methods.gradcam import gradcam, gradcam_plus_plus
from camlens.postprocess import normalize_per_image


class Head(nn.Module):
    """``features -> GAP -> linear``: the exact-identity architecture of METHODS.md."""

    def __init__(self, features: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.features = features
        self.fc = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            self.fc.bias.copy_(bias if bias is not None else torch.zeros(weight.shape[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def identity_head(weight: torch.Tensor, bias: torch.Tensor | None = None) -> Head:
    return Head(nn.Identity(), weight, bias).eval()


def conv_head(channels: int = 6, classes: int = 4, seed: int = 0) -> Head:
    torch.manual_seed(seed)
    features = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU())
    return Head(features, torch.randn(classes, channels)).eval()


def test_gradcam_hand_computed_map():
    # A = the input itself (identity layer); classifier row of class 0 is (1, -2); Z = 4.
    A = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [2.0, 0.0]]]])
    model = identity_head(torch.tensor([[1.0, -2.0], [0.5, 1.0]]))
    result = camlens.explain(model, A, ["gradcam"], target_layer="features", targets=0)
    # g = W / Z = (0.25, -0.5) everywhere; raw = 0.25 * A0 - 0.5 * A1
    expected_raw = torch.tensor([[[0.25, 0.0], [-0.25, 1.0]]])
    torch.testing.assert_close(result.raw["gradcam"], expected_raw)
    # ReLU -> (0.25, 0, 0, 1); min 0, max 1 -> unchanged by min-max
    torch.testing.assert_close(result["gradcam"], torch.tensor([[[0.25, 0.0], [0.0, 1.0]]]))


def test_gradcam_plus_plus_hand_computed_weights():
    A = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [2.0, 0.0]]]])
    model = identity_head(torch.tensor([[1.0, -2.0], [0.5, 1.0]]))
    result = camlens.explain(model, A, ["gradcam++"], target_layer="features", targets=1)
    # class 1: W = (0.5, 1); mean(A) = (2.5, 0.75); w_k = ReLU(W)/(2 + W*mean(A)) = (0.5/3.25, 1/2.75)
    w = torch.tensor([0.5 / 3.25, 1 / 2.75])
    expected = w[0] * A[0, 0] + w[1] * A[0, 1]
    torch.testing.assert_close(result.raw["gradcam++"], expected[None])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gap_identities(seed):
    """At the GAP input: Grad-CAM = ReLU(CAM), Grad-CAM++ weights = ReLU(W)/(2 + W mean A), completeness."""
    model = conv_head(seed=seed)
    x = torch.randn(3, 3, 7, 9)
    classes = torch.tensor([0, 2, 3])
    result = camlens.explain(model, x, ["gradcam", "gradcam++"], target_layer="features", targets=classes)
    cap = result.capture
    A, g = cap.activations, cap.gradients
    W, b = model.fc.weight.detach()[classes], model.fc.bias.detach()[classes]
    Z = A.shape[2] * A.shape[3]
    # the gradient is W_ck / Z everywhere
    torch.testing.assert_close(g, (W / Z)[:, :, None, None].expand_as(g))
    cam_2016 = torch.einsum("bk,bkij->bij", W, A)
    torch.testing.assert_close(result.raw["gradcam"] * Z, cam_2016, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result["gradcam"], normalize_per_image(torch.relu(cam_2016)), rtol=1e-5, atol=1e-5)
    pp_weights = torch.relu(W) / (2 + W * A.mean(dim=(2, 3)))
    torch.testing.assert_close(
        result.raw["gradcam++"], torch.einsum("bk,bkij->bij", pp_weights, A), rtol=1e-5, atol=1e-6
    )
    # completeness: sum_kij g A + b = S
    torch.testing.assert_close((g * A).sum(dim=(1, 2, 3)) + b, result.scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result.scores, model(x).gather(1, classes[:, None])[:, 0])


def test_scaling_classifier_changes_plus_plus_only():
    model = conv_head(seed=3)
    x = torch.randn(2, 3, 8, 8)
    before = camlens.explain(model, x, ["gradcam", "gradcam++"], target_layer="features", targets=1)
    with torch.no_grad():
        model.fc.weight.mul_(10)
    after = camlens.explain(model, x, ["gradcam", "gradcam++"], target_layer="features", targets=1)
    torch.testing.assert_close(before["gradcam"], after["gradcam"], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before["gradcam++"], after["gradcam++"], atol=1e-3)


def eq19_reference(A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ Eq. 19 element by element in float64: the paper's formula, loops and all."""
    A, g = A.double(), g.double()
    B, K, U, V = A.shape
    out = torch.zeros(B, U, V, dtype=torch.float64)
    for b in range(B):
        for k in range(K):
            total = float(A[b, k].sum())
            weight = 0.0
            for i in range(U):
                for j in range(V):
                    gij = float(g[b, k, i, j])
                    denominator = 2 * gij**2 + total * gij**3
                    alpha = gij**2 / denominator if denominator != 0 else 0.0
                    weight += alpha * max(gij, 0.0)
            out[b] += weight * A[b, k]
    return out


def test_gradcam_plus_plus_matches_eq19_with_tiny_gradients():
    """Gradients ~1e-4: a fixed epsilon would distort alpha; the safe division must not."""
    torch.manual_seed(0)
    A = torch.rand(2, 5, 4, 4)
    g = torch.randn(2, 5, 4, 4) * 1e-4
    g[0, 0, 0, :2] = 0.0  # g = 0 -> alpha = 0
    torch.testing.assert_close(gradcam_plus_plus(A, g).double(), eq19_reference(A, g), rtol=1e-4, atol=1e-9)


def test_gradcam_plus_plus_zero_denominator_is_safe():
    # sum A = 4 per channel; g = -0.5 gives 2 g^2 + 4 g^3 = 0.5 - 0.5 = 0 exactly
    A = torch.ones(1, 1, 2, 2)
    g = torch.full((1, 1, 2, 2), -0.5)
    g[0, 0, 0, 0] = 0.25
    raw = gradcam_plus_plus(A, g)
    assert torch.isfinite(raw).all()
    torch.testing.assert_close(raw.double(), eq19_reference(A, g))


def test_gradcam_function_matches_loop_reference():
    torch.manual_seed(1)
    A, g = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    expected = torch.zeros(2, 4, 5)
    for b in range(2):
        for k in range(3):
            expected[b] += g[b, k].mean() * A[b, k]
    torch.testing.assert_close(gradcam(A, g), expected)


def test_counterfactual_identity():
    """GradCAM - Counterfactual = sum_k w_k A_k (pre-ReLU), at layer resolution."""
    model = conv_head(seed=4)
    x = torch.randn(2, 3, 6, 6)
    plain = camlens.explain(model, x, ["gradcam"], target_layer="features", targets=2)
    counter = camlens.explain(model, x, ["gradcam"], target_layer="features", targets=2, counterfactual=True)
    torch.testing.assert_close(counter.raw["gradcam"], -plain.raw["gradcam"])
    identity = torch.relu(plain.raw["gradcam"]) - torch.relu(counter.raw["gradcam"])
    torch.testing.assert_close(identity, plain.raw["gradcam"])
    assert counter.counterfactual and not plain.counterfactual


def test_map_is_upsampled_bilinearly_then_normalised():
    model = conv_head(seed=5)
    x = torch.randn(1, 3, 5, 5)
    small = camlens.explain(model, x, ["gradcam"], target_layer="features", targets=0)
    raw = small.raw["gradcam"]
    # the model is size-agnostic: a bigger input gives the same layer map only if we feed the same x, so
    # check the post-processing directly against F.interpolate on the raw map
    up = torch.nn.functional.interpolate(torch.relu(raw)[:, None], size=(5, 5), mode="bilinear", align_corners=False)[
        :, 0
    ]
    torch.testing.assert_close(small["gradcam"], normalize_per_image(up))
    assert small["gradcam"].min() == 0 and small["gradcam"].max() == 1


def test_normalisation_of_degenerate_maps():
    maps = torch.stack([torch.zeros(3, 3), torch.full((3, 3), 2.0), torch.arange(9.0).view(3, 3)])
    out = normalize_per_image(maps)
    assert torch.equal(out[0], torch.zeros(3, 3))
    assert torch.equal(out[1], torch.ones(3, 3))
    torch.testing.assert_close(out[2], torch.arange(9.0).view(3, 3) / 8)
    assert torch.isfinite(out).all()


def test_rounding_noise_on_a_flat_map_is_not_stretched():
    # a 1x1 layer map upsampled: constant up to rounding
    raw = torch.tensor([[[11.4087]]], dtype=torch.float64)
    up = torch.nn.functional.interpolate(raw[:, None], size=(37, 53), mode="bilinear", align_corners=False)[:, 0]
    noisy = up + torch.rand_like(up) * 1e-14
    assert torch.equal(normalize_per_image(noisy), torch.ones_like(noisy))
    assert torch.equal(normalize_per_image(-noisy), torch.zeros_like(noisy))
