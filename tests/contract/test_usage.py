"""Where users' models are: frozen, under no_grad, training mode, odd outputs; and clear errors."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
from torch import nn

import camlens
from helpers import assert_untouched, cached, snapshot


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 6, 3, padding=1),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    ).eval()


X = torch.rand(2, 3, 10, 10)


def test_default_layer_is_reported():
    model = small_net()
    cam = camlens.GradCAM(model)
    assert cam.target_layer_name is None
    cam(X)
    assert cam.target_layer_name == "4"
    assert camlens.explain(model, X).target_layer == "4"


@pytest.mark.parametrize("spec", ["3", 3])
def test_layer_by_name_or_module(spec):
    model = small_net()
    layer = model[3] if spec == 3 else spec
    assert camlens.GradCAM(model, layer).target_layer_name == "3"


def test_unknown_layer_names_closest():
    model = cached("resnet18")
    with pytest.raises(ValueError, match=r"no layer named 'layer5'.*layer4"):
        camlens.GradCAM(model, "layer5")
    with pytest.raises(ValueError, match="not a submodule"):
        camlens.GradCAM(model, nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="module or a dotted name"):
        camlens.GradCAM(model, 3.5)


def test_densenet_layer_names_resolve():
    model = cached("densenet121")
    assert camlens.GradCAM(model, "features.norm5").target_layer_name == "features.norm5"


def test_frozen_parameters_and_no_grad_context():
    model = small_net()
    for p in model.parameters():
        p.requires_grad_(False)
    before = snapshot(model)
    reference = camlens.explain(small_net(), X)
    with torch.no_grad():
        result = camlens.explain(model, X)
        assert not torch.is_grad_enabled()
    assert_untouched(model, before)
    for name in camlens.SEED_METHODS:
        torch.testing.assert_close(result[name], reference[name])


def test_inference_mode_input():
    model = small_net()
    with torch.inference_mode():
        x = X.clone()
        result = camlens.explain(model, x)
    assert torch.isfinite(result["gradcam"]).all()


def test_existing_grads_and_user_hooks_kept():
    model = small_net()
    model(X).sum().backward()  # the user's own .grad
    calls = []
    handle = model[3].register_forward_hook(lambda *a: calls.append(1))
    before = snapshot(model)
    camlens.explain(model, X)
    assert_untouched(model, before)
    assert calls  # the user's hook still runs and is still there
    handle.remove()


def test_training_mode_explained_as_left_and_kept():
    model = small_net().train()
    before = snapshot(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    camlens.explain(model, X, ["gradcam"], target_layer="4")
    assert all(m.training for m in model.modules())
    # explained in training mode (batch statistics, dropout active), yet no buffer moved
    assert_untouched(model, before)
    for key, value in state.items():
        assert torch.equal(value, model.state_dict()[key]), key


Output = namedtuple("Output", ["logits", "aux"])


class Wrapped(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.net = small_net()
        self.kind = kind

    def forward(self, x):
        y = self.net(x)
        if self.kind == "tuple":
            return y, y * 2
        if self.kind == "dict":
            return {"logits": y, "features": y}
        if self.kind == "named":
            return Output(y, y)
        return {"out": y}


@pytest.mark.parametrize("kind", ["dict", "named"])
def test_outputs_holding_logits(kind):
    model = Wrapped(kind).eval()
    plain = camlens.explain(model.net, X, target_layer="4")
    result = camlens.explain(model, X, target_layer="net.4")
    torch.testing.assert_close(result["gradcam"], plain["gradcam"])


@pytest.mark.parametrize("kind", ["tuple", "other"])
def test_ambiguous_outputs_need_a_callable(kind):
    model = Wrapped(kind).eval()
    with pytest.raises(ValueError, match="targets=a callable"):
        camlens.explain(model, X, target_layer="net.4")
    pick = (lambda out: out[1][:, 2]) if kind == "tuple" else (lambda out: out["out"][:, 2])
    result = camlens.explain(model, X, target_layer="net.4", targets=pick)
    plain = camlens.explain(model.net, X, target_layer="4", targets=2)
    torch.testing.assert_close(result["gradcam"], plain["gradcam"])
    assert result.classes is None


def test_callable_target_for_segmentation_like_output():
    torch.manual_seed(0)
    seg = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 2, 1)).eval()
    result = camlens.explain(
        seg, X, ["gradcam"], target_layer="1", targets=lambda out: out[:, 1, :5, :5].sum(dim=(1, 2))
    )
    assert result["gradcam"].shape == (2, 10, 10)
    g, A = result.capture.gradients, result.capture.activations
    # the score reads a 5x5 region through a 1x1 conv: no gradient outside it
    assert torch.count_nonzero(g[:, :, 5:, :]) == 0 and torch.count_nonzero(g[:, :, :, 5:]) == 0
    assert torch.count_nonzero(g[:, :, :5, :5]) > 0
    torch.testing.assert_close(result.raw["gradcam"], (g.mean(dim=(2, 3))[:, :, None, None] * A).sum(1))


def test_target_validation():
    model = small_net()
    with pytest.raises(ValueError, match=r"class 4 is out of range: the model has 4 outputs"):
        camlens.GradCAM(model)(X, targets=4)
    with pytest.raises(ValueError, match=r"class -1 is out of range"):
        camlens.GradCAM(model)(X, targets=[0, -1])
    with pytest.raises(ValueError, match="3 classes for a batch of 2"):
        camlens.GradCAM(model)(X, targets=[0, 1, 2])
    with pytest.raises(TypeError):
        camlens.GradCAM(model)(X, targets=1.5)
    with pytest.raises(ValueError, match="one score per image"):
        camlens.GradCAM(model)(X, targets=lambda out: out.sum())
    result = camlens.explain(model, X, ["gradcam"], targets=torch.tensor([3, 0]))
    assert result.classes.tolist() == [3, 0]


def test_layer_errors_say_why():
    model = small_net()
    with pytest.raises(ValueError, match=r"'8' outputs a Tensor of shape \(2, 4\)"):
        camlens.explain(model, X, ["gradcam"], target_layer="8")

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = small_net()
            self.unused = nn.Conv2d(3, 3, 1)
            self.side = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            self.side(x)  # runs, but the score does not depend on it
            return self.net(x)

    model = Branchy().eval()
    with pytest.raises(ValueError, match="did not run"):
        camlens.explain(model, X, ["gradcam"], target_layer="unused")
    with pytest.raises(ValueError, match="no gradient reaches the target layer 'side'"):
        camlens.explain(model, X, ["gradcam"], target_layer="side")
    with pytest.raises(ValueError, match="unknown method"):
        camlens.explain(model, X, ["gradcamm"])
    with pytest.raises(ValueError, match=r"batch of images \(B, C, H, W\)"):
        camlens.explain(model, X[0])
    with pytest.raises(TypeError, match="nn.Module"):
        camlens.explain(lambda t: t, X)


def test_shared_layer_is_refused():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean(dim=(2, 3)))

    with pytest.raises(ValueError, match="ran 2 times"):
        camlens.explain(Shared().eval(), X, ["gradcam"], target_layer="conv")


def test_in_place_op_after_layer_does_not_change_explained_activations():
    class InPlaceAfter(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.norm = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            a = self.norm(x)
            a = torch.nn.functional.relu(a, inplace=True)  # overwrites the layer's output (densenet's pattern)
            return self.fc((a * 3.0).mean(dim=(2, 3)))

    model = InPlaceAfter().eval()
    result = camlens.explain(model, X, target_layer="norm", targets=1)
    expected_A = model.norm(X)
    torch.testing.assert_close(result.capture.activations, expected_A)
    assert (result.capture.activations < 0).any()  # the pre-ReLU values, not the overwritten ones
