"""Layouts, the automatic layer rule, and the errors and warnings for layers that cannot show anything."""

from __future__ import annotations

import warnings

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import camlens
from camlens.layouts import Layout, LayoutError, grid_for, resolve_layout


def tiny_vit(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    config = {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2, "num_classes": 5}
    return VisionTransformer(**{**config, **kwargs}).eval()


@pytest.mark.parametrize(
    ("shape", "size", "kind", "grid", "prefix"),
    [
        ((2, 768, 7, 7), (224, 224), "nchw", (7, 7), 0),
        ((2, 7, 7, 768), (224, 224), "nhwc", (7, 7), 0),
        ((2, 2, 3, 96), (64, 96), "nhwc", (2, 3), 0),
        ((2, 96, 2, 3), (64, 96), "nchw", (2, 3), 0),
        ((2, 197, 384), (224, 224), "tokens", (14, 14), 1),
        ((2, 201, 384), (224, 224), "tokens", (14, 14), 5),  # class + 4 register tokens
        ((2, 196, 384), (224, 224), "tokens", (14, 14), 0),
        ((2, 24, 8), (64, 96), "tokens", (4, 6), 0),  # non-square
        ((2, 26, 8), (64, 96), "tokens", (4, 6), 2),  # class + distillation tokens
    ],
)
def test_layouts_detected_from_the_shape(shape, size, kind, grid, prefix):
    layout = resolve_layout(shape, size)
    assert (layout.kind, layout.grid, layout.prefix_tokens) == (kind, grid, prefix)
    t = torch.randn(shape)
    spatial = layout.to_spatial(t)
    assert spatial.shape == (shape[0], layout.to_spatial(t).shape[1], *grid)


def test_to_spatial_puts_each_token_and_channel_where_it_belongs():
    t = torch.arange(2 * 7 * 3, dtype=torch.float32).view(2, 7, 3)  # 1 prefix + 2 x 3 grid, 3 channels
    s = Layout("tokens", (2, 3), prefix_tokens=1, shape=(2, 7, 3)).to_spatial(t)
    for b in range(2):
        for i in range(2):
            for j in range(3):
                assert torch.equal(s[b, :, i, j], t[b, 1 + i * 3 + j])
    hwc = torch.randn(2, 4, 5, 3)
    assert torch.equal(Layout("nhwc", (4, 5)).to_spatial(hwc)[1, 2, 3, 4], hwc[1, 3, 4, 2])


def test_ambiguous_and_undecidable_layouts():
    # (B, 8, 8, 8) reads both ways: a LayerNorm over the last axis says channels-last, a conv channels-first
    assert resolve_layout((1, 8, 8, 8), (64, 64), module=nn.LayerNorm(8)).kind == "nhwc"
    assert resolve_layout((1, 8, 8, 8), (64, 64), module=nn.Conv2d(3, 8, 1)).kind == "nchw"
    assumed = resolve_layout((1, 8, 8, 8), (64, 64), module=nn.Identity())
    assert assumed.kind == "nchw" and assumed.assumed and "assumed" in assumed.describe()

    class OnePrefix(nn.Module):
        num_prefix_tokens = 1

    with pytest.raises(LayoutError, match="layout='nchw'"):
        resolve_layout((1, 51, 8), (64, 64), model=OnePrefix(), spec="tokens")  # 50 and 51 fit no 64 x 64 grid
    with pytest.raises(LayoutError, match="needs a 3-D"):
        resolve_layout((1, 8, 8, 8), (64, 64), spec="tokens")
    with pytest.raises(ValueError, match="layout must be one of"):
        resolve_layout((1, 8, 8, 8), (64, 64), spec="hwc")
    assert grid_for(7, (64, 64)) is None


def test_model_says_its_prefix_tokens_and_grid():
    vit = tiny_vit(img_size=(32, 48), reg_tokens=3, class_token=True)
    layout = resolve_layout((1, 4 + 24, 16), (32, 48), model=vit)
    assert (layout.grid, layout.prefix_tokens) == ((4, 6), 4)


class NHWCNet(nn.Module):
    """A conv whose output is handed on channels-last, with a LayerNorm over channels: Swin's layout."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1, stride=2)
        self.norm = nn.LayerNorm(6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        h = self.norm(self.conv(x).permute(0, 2, 3, 1))  # (B, H, W, C)
        return self.fc(h.mean(dim=(1, 2)))


def test_channels_last_gradcam_equals_the_channels_first_formula():
    model = NHWCNet().eval()
    x = torch.rand(2, 3, 16, 24)
    result = camlens.explain(model, x, ["gradcam"], targets=1)
    assert result.target_layer == "norm" and result.layout.kind == "nhwc" and result.layout.grid == (8, 12)
    # by hand: A (B, H, W, C), g = W_1 / (H W) everywhere; Grad-CAM = sum_c mean(g_c) A_c
    a = model.norm(model.conv(x).permute(0, 2, 3, 1)).detach()
    expected = torch.einsum("bhwc,c->bhw", a, model.fc.weight[1].detach() / (8 * 12))
    torch.testing.assert_close(result.raw["gradcam"], expected)


def test_explicit_layout_and_callable():
    model = NHWCNet().eval()
    x = torch.rand(1, 3, 16, 16)
    by_name = camlens.explain(model, x, ["gradcam"], "norm", targets=0, layout="nhwc")
    by_callable = camlens.explain(model, x, ["gradcam"], "norm", targets=0, layout=lambda t: t.permute(0, 3, 1, 2))
    torch.testing.assert_close(by_name.raw["gradcam"], by_callable.raw["gradcam"])
    assert by_callable.layout.kind == "custom"


def test_vit_automatic_layer_is_the_last_blocks_first_norm():
    vit = tiny_vit()
    result = camlens.explain(vit, torch.rand(2, 3, 32, 32), ["gradcam", "gradcam++"])
    assert result.target_layer == "blocks.1.norm1"
    assert result.layout.describe() == "tokens (2, 17, 16): 1 prefix token dropped, 4 x 4 grid"
    assert result.raw["gradcam"].shape == (2, 4, 4)


def test_vit_last_block_output_is_an_error_naming_the_automatic_layer():
    vit = tiny_vit()
    with pytest.raises(ValueError, match=r"no gradient at the spatial positions.*'blocks.1.norm1'"):
        camlens.explain(vit, torch.rand(1, 3, 32, 32), ["gradcam"], target_layer="blocks.1")


def test_layer_after_the_global_pool_is_an_error_naming_a_better_layer():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Conv2d(4, 3, 1), nn.Flatten()
    ).eval()
    with pytest.raises(ValueError, match=r"1 x 1 map.*automatic choice '1'"):
        camlens.explain(model, torch.rand(1, 3, 8, 8), ["gradcam"], target_layer="3")
    assert camlens.explain(model, torch.rand(1, 3, 8, 8), ["gradcam"]).target_layer == "1"


def test_constant_map_is_a_recorded_warning():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        model[3].weight[1].zero_()
    with pytest.warns(UserWarning, match="constant"):
        result = camlens.explain(model.eval(), torch.rand(1, 3, 8, 8), ["gradcam"], "0", targets=1)
    assert len(result.warnings) == 1 and "gradcam" in result.warnings[0]


def test_map_negative_at_every_position_is_a_recorded_warning_naming_the_images():
    """Grad-CAM = ReLU(sum_k alpha_k A_k): one positive channel read with a negative weight has a signed map
    below zero at every position, so the displayed map is zero everywhere: said, for that image only."""
    model = nn.Sequential(nn.Conv2d(3, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2)).eval()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.fill_(0.5)
        model[3].weight.copy_(torch.tensor([[1.0], [-1.0]]))
    x = torch.rand(3, 3, 8, 8)
    with pytest.warns(UserWarning, match=r"gradcam: the map at layer '0' is zero everywhere for image\(s\) \[1\]"):
        result = camlens.explain(model, x, ["gradcam"], "0", targets=[0, 1, 0])
    assert len(result.warnings) == 1 and "legrad or fullgrad" in result.warnings[0]
    assert result.image_warnings[0] == result.image_warnings[2] == ()
    assert len(result.image_warnings[1]) == 1 and "zero everywhere for this image" in result.image_warnings[1][0]
    assert (result.raw["gradcam"][1] < 0).all() and (result["gradcam"][1] == 0).all()
    assert (result["gradcam"][[0, 2]].flatten(1).amax(dim=1) == 1).all()


class Counted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("methods", [["gradcam"], ["gradcam", "guided_backprop"]])
def test_user_hooks_fire_once_per_call_with_the_automatic_layer(methods):
    """Regression: the first call with the automatic layer used to run an extra tracing forward."""
    model = Counted().eval()
    seen: list[str] = []
    handles = [m.register_forward_hook(lambda m, i, o, n=n: seen.append(n)) for n, m in model.named_modules()]
    try:
        x = torch.rand(1, 3, 8, 8)
        first = camlens.explain(model, x, methods)
        assert seen.count("") == 1 and seen.count("features.0") == 1
        seen.clear()
        second = camlens.explain(model, x, methods)  # the cached choice: the fast path
        assert seen.count("") == 1 and seen.count("features.0") == 1
        assert first.target_layer == second.target_layer == "features"
        torch.testing.assert_close(first["gradcam"], second["gradcam"])
        seen.clear()
        camlens.GradCAM(Counted().eval())(x)
    finally:
        for handle in handles:
            handle.remove()


class Blurred(nn.Module):
    """Every position gets the image-wide mean vector, plus a position-dependent wobble far below rounding."""

    def forward(self, x):
        wobble = 1e-10 * torch.arange(x.shape[-1], dtype=x.dtype)  # ~1 ulp steps of values near 5e-4
        return 1e-3 * x.mean(dim=(2, 3), keepdim=True).expand_as(x) + wobble


def test_automatic_layer_skips_a_layer_that_varies_only_by_rounding():
    """LeViT's later stages at random init: the same vector at every position up to rounding. The rule takes
    the deepest layer that varies beyond 64 ulps of its largest activation, and says nothing is wrong."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Blurred(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2)).eval()  # fmt: skip
    x = torch.rand(1, 3, 8, 8)
    flat = model[1](model[0](x))
    assert flat.amax(dim=(2, 3)).gt(flat.amin(dim=(2, 3))).any()  # not exactly constant: the old rule took it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = camlens.explain(model, x, ["gradcam"])
    assert result.target_layer == "0"
    assert result.warnings == ()
