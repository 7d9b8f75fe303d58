"""Clips and volumes ``(B, C, T, H, W)``: every CAM method at a 3-D layer against the paper's formula by hand.

Oracles: Grad-CAM computed by hand (a forward hook, ``torch.autograd.grad`` of the class score, weights the
mean of the gradient over ``(t, u, v)``, ReLU of the weighted sum, trilinear upsampling, per-clip min-max) on
a hand-built 3-D CNN and on torchvision's r3d_18; guided backprop against Springenberg's rule applied by hand
on a functional copy of a tiny net; Score-CAM and Ablation-CAM by their definitions; batch equals singles;
the model left as found, also when a call is refused.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camlens
from camlens.layers import candidate_layers
from camlens.layouts import resolve_layout
from helpers import assert_untouched, snapshot

warnings.filterwarnings("ignore", category=camlens.errors.ExplanationNote)


def tiny_cnn(channels: int = 3, classes: int = 4, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(channels, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv3d(6, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    ).eval()


def clip(batch: int = 2, channels: int = 3, t: int = 4, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, channels, t, size, size, generator=torch.Generator().manual_seed(seed))


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """camlens' per-image min-max, over the whole clip: (m - min) / (max - min)."""
    flat = maps.flatten(1)
    low, high = flat.amin(1).view(-1, 1, 1, 1), flat.amax(1).view(-1, 1, 1, 1)
    return (maps - low) / (high - low)


def shows_something(raw: torch.Tensor) -> bool:
    """Every clip's signed map is positive somewhere and not constant (else the comparison is of zeros)."""
    flat = raw.flatten(1)
    return bool(((flat.amax(1) > 0) & (flat.amax(1) > flat.amin(1))).all())


def raw_gradcam_by_hand(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, classes: torch.Tensor, on_grid=lambda t: t
) -> tuple:
    """``sum_k mean_tuv(dS/dA_k) A_k`` at ``layer`` (forward hook + autograd.grad), and the terms' magnitude.
    ``on_grid`` lays the layer's output (the first element of a block's ``(x, thw)``) out as ``(B, K, t, u, v)``."""
    kept = {}

    def keep(_m: nn.Module, _i: object, out: object) -> None:  # returns None: the output goes on unchanged
        kept.setdefault("A", out[0] if isinstance(out, tuple) else out)

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(x)
            (g,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), [kept["A"]])
    finally:
        handle.remove()
    a, g = on_grid(kept["A"].detach()), on_grid(g)
    weights = g.mean(dim=(2, 3, 4))[:, :, None, None, None]  # over (t, u, v)
    return (weights * a).sum(dim=1), (weights.abs() * a.abs()).sum(dim=1).amax()


def gradcam_by_hand(model: nn.Module, layer: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    cam = torch.relu(raw_gradcam_by_hand(model, layer, x, classes)[0])
    up = F.interpolate(cam[:, None], size=tuple(x.shape[2:]), mode="trilinear", align_corners=False)[:, 0]
    return normalise(up)


def test_gradcam_on_a_3d_cnn_is_the_formula_by_hand() -> None:
    model, x = tiny_cnn(), clip()
    before = snapshot(model)
    result = camlens.explain(model, x, ["gradcam", "gradcam++"], target_layer="3")
    assert_untouched(model, before)
    assert result["gradcam"].shape == (2, 4, 16, 16)
    assert result.raw["gradcam"].shape == (2, 2, 8, 8)  # the layer's (t, u, v)
    assert result.layout is not None and result.layout.kind == "nchw" and result.layout.grid == (2, 8, 8)
    assert shows_something(result.raw["gradcam"])
    expected = gradcam_by_hand(model, model[3], x, result.classes)
    torch.testing.assert_close(result["gradcam"], expected, atol=1e-5, rtol=1e-5)
    assert result.classes.tolist() == model(x).argmax(1).tolist()


def test_the_automatic_layer_of_a_3d_cnn_is_its_last_3d_map() -> None:
    model, x = tiny_cnn(), clip()
    result = camlens.explain(model, x, ["gradcam"])
    assert result.target_layer == "3"
    torch.testing.assert_close(result["gradcam"], gradcam_by_hand(model, model[3], x, result.classes))
    assert candidate_layers(model, x) == ["0", "1", "2", "3"]


def test_a_one_channel_volume_gives_a_map_per_slice() -> None:
    model, x = tiny_cnn(channels=1), clip(batch=3, channels=1, t=6, size=12)
    result = camlens.explain(model, x, ["gradcam", "layercam", "guided_backprop"], targets=2)
    assert result["gradcam"].shape == (3, 6, 12, 12) and result["layercam"].shape == (3, 6, 12, 12)
    assert result["guided_backprop"].shape == x.shape
    torch.testing.assert_close(result["gradcam"], gradcam_by_hand(model, model[3], x, torch.full((3,), 2)))


def test_every_cam_weighting_reduces_over_all_3d_positions() -> None:
    """Each (A, g) method on the 3-D layer equals the method on the same positions laid out as one 2-D grid
    (the definitions reduce over all positions or work per position), checked against two closed forms."""
    model, x = tiny_cnn(), clip()
    names = ["gradcam", "xgradcam", "layercam", "hirescam", "gradcam_elementwise", "eigencam", "fem"]
    result = camlens.explain(model, x, names, target_layer="3")
    a, g = result.capture.activations, result.capture.gradients
    assert a.shape == (2, 8, 2, 8, 8)
    w = g.mean(dim=(2, 3, 4))
    torch.testing.assert_close(result.raw["gradcam"], torch.einsum("bk,bktuv->btuv", w, a))
    torch.testing.assert_close(result.raw["hirescam"], (g * a).sum(1))
    torch.testing.assert_close(result.raw["layercam"], (torch.relu(g) * a).sum(1))
    xw = (a * g).sum(dim=(2, 3, 4)) / a.sum(dim=(2, 3, 4))
    torch.testing.assert_close(result.raw["xgradcam"], torch.einsum("bk,bktuv->btuv", xw, a))
    # Eigen-CAM: the first principal component of the (t u v, K) matrix, sign as the mean activation
    for b in range(2):
        m = a[b].flatten(1).T.double()
        centred = m - m.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        pc = (centred @ v[0]).view(2, 8, 8)
        if torch.corrcoef(torch.stack([pc.flatten(), a[b].mean(0).double().flatten()]))[0, 1] < 0:
            pc = -pc
        torch.testing.assert_close(result.raw["eigencam"][b].double(), pc, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def r3d() -> nn.Module:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return torchvision.models.video.r3d_18(num_classes=5).eval()


@pytest.mark.slow
def test_gradcam_on_r3d_18_is_the_formula_by_hand(r3d: nn.Module) -> None:
    x = clip(batch=2, t=4, size=32)
    before = snapshot(r3d)
    for layer in ("layer3", None):
        result = camlens.explain(r3d, x, ["gradcam"], target_layer=layer, targets=[1, 3])
        name = layer or "layer4"
        assert result.target_layer == name and shows_something(result.raw["gradcam"])
        expected = gradcam_by_hand(r3d, dict(r3d.named_modules())[name], x, torch.tensor([1, 3]))
        torch.testing.assert_close(result["gradcam"], expected, atol=1e-5, rtol=1e-4)
    assert result.raw["gradcam"].shape == (2, 1, 2, 2)
    assert_untouched(r3d, before)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mc3_18", "r2plus1d_18"])
def test_torchvision_video_resnets_get_their_last_stage(arch: str) -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = getattr(torchvision.models.video, arch)(num_classes=3).eval()
    x = clip(batch=1, t=4, size=32)
    result = camlens.explain(model, x, ["gradcam", "guided_backprop"])
    assert result.target_layer == "layer4"
    assert result["gradcam"].shape == (1, 4, 32, 32) and result["guided_backprop"].shape == x.shape
    torch.testing.assert_close(result["gradcam"], gradcam_by_hand(model, model.layer4, x, result.classes))


class GuidedRelu(torch.autograd.Function):
    """Springenberg et al.'s rule: pass the gradient where the input and the gradient are both positive."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * (x > 0) * (grad > 0)


def test_guided_backprop_on_a_3d_cnn_is_the_rule_by_hand() -> None:
    model, x = tiny_cnn(), clip()
    result = camlens.explain(model, x, ["guided_backprop", "guided_gradcam"], targets=[0, 2])
    conv1, conv2, linear = model[0], model[2], model[6]
    xin = x.clone().requires_grad_(True)
    h = GuidedRelu.apply(F.conv3d(xin, conv1.weight, conv1.bias, padding=1))
    h = GuidedRelu.apply(F.conv3d(h, conv2.weight, conv2.bias, stride=2, padding=1))
    logits = F.linear(h.mean(dim=(2, 3, 4)), linear.weight, linear.bias)
    (expected,) = torch.autograd.grad(logits[[0, 1], [0, 2]].sum(), [xin])
    assert result.guided_rule == {"relu": 2}
    torch.testing.assert_close(result["guided_backprop"], expected)
    gradcam = camlens.explain(model, x, ["gradcam"], targets=[0, 2])["gradcam"]
    torch.testing.assert_close(result["guided_gradcam"], expected * gradcam[:, None])


def test_scorecam_and_ablationcam_on_a_3d_layer_follow_their_definitions() -> None:
    model, x = tiny_cnn(), clip(batch=1)
    result = camlens.explain(model, x, ["scorecam", "ablationcam"], target_layer="3")
    a = result.capture.activations[0]  # (K, t, u, v)
    c = int(result.classes[0])
    head = nn.Sequential(*list(model)[4:])
    with torch.no_grad():
        score = model(x)[0, c]
        up = F.interpolate(a[:, None], size=(4, 16, 16), mode="trilinear", align_corners=False)[:, 0]
        low, high = up.flatten(1).amin(1).view(-1, 1, 1, 1), up.flatten(1).amax(1).view(-1, 1, 1, 1)
        masks = (up - low) / (high - low)
        score_w = torch.softmax(model(x * masks[:, None]), dim=1)[:, c]
        ablated = a[None].repeat(a.shape[0], 1, 1, 1, 1)
        ablated[range(a.shape[0]), range(a.shape[0])] = 0
        ablation_w = (score - head(ablated)[:, c]) / score
    torch.testing.assert_close(result.raw["scorecam"][0], torch.einsum("k,ktuv->tuv", score_w, a))
    torch.testing.assert_close(result.raw["ablationcam"][0], torch.einsum("k,ktuv->tuv", ablation_w, a))


def test_a_batch_of_clips_equals_each_clip_alone() -> None:
    model, x = tiny_cnn().double(), clip(batch=3).double()
    names = ["gradcam", "gradcam++", "layercam", "eigencam", "guided_backprop", "ablationcam"]
    together = camlens.explain(model, x, names)
    for i in range(3):
        alone = camlens.explain(model, x[i : i + 1], names)
        for name in names:
            torch.testing.assert_close(together[name][i : i + 1], alone[name], atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("method", ["fullgrad", "sess", "legrad", "attention_rollout"])
def test_methods_defined_on_2d_images_only_are_refused_in_one_line(method: str) -> None:
    model, x = tiny_cnn(), clip()
    before = snapshot(model)
    with pytest.raises(ValueError, match=f"^{method} is not defined on clips or volumes") as error:
        camlens.explain(model, x, ["gradcam", method])
    assert "\n" not in str(error.value)
    assert_untouched(model, before)


def test_a_layer_that_is_not_a_3d_map_is_refused_on_a_clip() -> None:
    model, x = tiny_cnn(), clip()
    before = snapshot(model)
    with pytest.raises(ValueError, match="5-D"):
        camlens.explain(model, x, ["gradcam"], target_layer="5")  # Flatten: (B, 8)
    with pytest.raises(ValueError, match=r"clips / volumes \(B, C, T, H, W\), got shape \(1, 3, 2, 4, 8, 8\)"):
        camlens.explain(model, torch.rand(1, 3, 2, 4, 8, 8), ["gradcam"])
    assert_untouched(model, before)


def test_five_d_layouts_read_channels_first_and_channels_last() -> None:
    size = (8, 64, 64)
    assert resolve_layout((1, 512, 1, 4, 4), size).kind == "nchw"
    found = resolve_layout((1, 2, 4, 4, 768), size)
    assert (found.kind, found.grid) == ("nhwc", (2, 4, 4))
    t = torch.arange(2 * 4 * 4 * 3.0).view(1, 2, 4, 4, 3)
    assert torch.equal(found.to_spatial(t), t.permute(0, 4, 1, 2, 3))
    assert torch.equal(found.to_native(found.to_spatial(t), t), t)
    # (B, 4, 4, 4, 4) reads both ways: a Conv3d says channels-first, a LayerNorm over the last axis channels-last
    assert resolve_layout((1, 4, 4, 4, 4), size, module=nn.Conv3d(4, 4, 1)).kind == "nchw"
    assert resolve_layout((1, 4, 4, 4, 4), size, module=nn.LayerNorm(4)).kind == "nhwc"
    assert resolve_layout((1, 4, 4, 4, 4), size).assumed


class ChannelsLast3d(nn.Module):
    """A 3-D CNN whose last map is laid out (B, t, u, v, C), as Video Swin's stages."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(3, 8, 3, stride=(1, 2, 2), padding=1)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(torch.relu(self.conv(x)).permute(0, 2, 3, 4, 1)).mean(dim=(1, 2, 3)))


def test_a_channels_last_3d_layer_is_read_as_such() -> None:
    model, x = ChannelsLast3d().eval(), clip(batch=2)
    result = camlens.explain(model, x, ["gradcam", "ablationcam"], target_layer="norm")
    assert result.layout.kind == "nhwc" and result.raw["gradcam"].shape == (2, 4, 8, 8)
    first = _ChannelsFirst(model)  # the same network with its norm output moved channels-first
    expected = gradcam_by_hand(first, first.layer, x, result.classes)
    torch.testing.assert_close(result["gradcam"], expected, atol=1e-5, rtol=1e-5)


class _ChannelsFirst(nn.Module):
    def __init__(self, inner: ChannelsLast3d) -> None:
        super().__init__()
        self.inner = inner
        self.layer = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.inner
        a = self.layer(m.norm(torch.relu(m.conv(x)).permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3))
        return m.head(a.mean(dim=(2, 3, 4)))


@pytest.mark.slow
def test_swin3d_t_is_explained_at_its_last_norm() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.video.swin3d_t(num_classes=3).eval()
    x = clip(batch=1, t=4, size=64)
    result = camlens.explain(model, x, ["gradcam", "guided_backprop"])
    assert result.layout is not None and result.layout.kind == "nhwc"
    assert result["gradcam"].shape == (1, 4, 64, 64) and result.raw["gradcam"].dim() == 4


@pytest.mark.slow
def test_s3d_is_explained_at_its_last_3d_map() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.video.s3d(num_classes=3).eval()
    x = clip(batch=1, t=16, size=224)
    result = camlens.explain(model, x, ["gradcam"])
    assert result.layout is not None and result.layout.kind == "nchw"
    assert result["gradcam"].shape == (1, 16, 224, 224)
    # at random initialisation S3D's map is flat to rounding (its image map is then zero): compare the signed map
    layer = dict(model.named_modules())[result.target_layer]
    raw, scale = raw_gradcam_by_hand(model, layer, x, result.classes)
    assert result.raw["gradcam"].shape == raw.shape == (1, 2, 7, 7)
    torch.testing.assert_close(result.raw["gradcam"], raw, atol=1e-5 * float(scale), rtol=1e-4)


def tiny_mvit(seed: int = 0) -> nn.Module:
    """A three-block MViT-v2 (torchvision's class, mvit_v2_s's options): (2, 8, 8) patches pooled to (2, 4, 4)."""
    from torchvision.models.video.mvit import MSBlockConfig, MViT

    torch.manual_seed(seed)

    def block(heads: int, c_in: int, c_out: int, stride_q: list[int], stride_kv: list[int]) -> MSBlockConfig:
        return MSBlockConfig(heads, c_in, c_out, [3, 3, 3], [3, 3, 3], stride_q, stride_kv)

    blocks = [block(1, 16, 16, [1, 1, 1], [1, 4, 4]), block(2, 16, 32, [1, 2, 2], [1, 2, 2]),
              block(2, 32, 32, [1, 1, 1], [1, 1, 1])]  # fmt: skip
    return MViT(
        spatial_size=(32, 32), temporal_size=4, block_setting=blocks, residual_pool=True,
        residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True, num_classes=5,
    ).eval()  # fmt: skip


def raw_gradcam_on_clip_tokens(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, classes: torch.Tensor, grid: tuple[int, int, int]
) -> torch.Tensor:
    """Grad-CAM's signed map at a token layer by hand: the layer's tokens (the first element of a block's
    ``(x, thw)``), the class token dropped, the rest laid out frame by frame on ``grid``."""

    def on_grid(t: torch.Tensor) -> torch.Tensor:
        return t[:, 1:, :].reshape(t.shape[0], *grid, t.shape[-1]).permute(0, 4, 1, 2, 3)

    return raw_gradcam_by_hand(model, layer, x, classes, on_grid)[0]


def test_mvit_tokens_are_laid_out_on_the_grid_the_blocks_hand_on() -> None:
    model, x = tiny_mvit(), clip(batch=2, t=4, size=32)
    before = snapshot(model)
    result = camlens.explain(model, x, ["gradcam"])
    assert_untouched(model, before)
    # the last block's attention is where the patches still reach the class token (after it only the class
    # token goes on to the head, so the block's own output has no gradient at the patches)
    assert result.target_layer == "blocks.2.norm1"
    assert result.layout is not None and (result.layout.kind, result.layout.grid) == ("tokens", (2, 4, 4))
    assert result.layout.prefix_tokens == 1
    layer = dict(model.named_modules())["blocks.2.norm1"]
    raw = raw_gradcam_on_clip_tokens(model, layer, x, result.classes, (2, 4, 4))
    assert shows_something(raw)
    torch.testing.assert_close(result.raw["gradcam"], raw, atol=1e-6, rtol=1e-5)
    up = F.interpolate(torch.relu(raw)[:, None], size=(4, 32, 32), mode="trilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(result["gradcam"], normalise(up), atol=1e-5, rtol=1e-5)


def test_an_mvit_block_is_a_layer_although_it_returns_tokens_and_their_grid() -> None:
    model, x = tiny_mvit(), clip(batch=2, t=4, size=32)
    before = snapshot(model)
    result = camlens.explain(model, x, ["gradcam", "layercam"], target_layer="blocks.1")
    assert_untouched(model, before)
    assert result.layout is not None and result.layout.grid == (2, 4, 4)
    raw = raw_gradcam_on_clip_tokens(model, model.blocks[1], x, result.classes, (2, 4, 4))
    assert shows_something(raw)
    torch.testing.assert_close(result.raw["gradcam"], raw, atol=1e-6, rtol=1e-5)
    # the first block's output: before the pooling, on the (2, 8, 8) grid of the patch embedding
    first = camlens.explain(model, x, ["gradcam"], target_layer="blocks.0")
    assert first.layout is not None and first.layout.grid == (2, 8, 8)
    raw = raw_gradcam_on_clip_tokens(model, model.blocks[0], x, first.classes, (2, 8, 8))
    torch.testing.assert_close(first.raw["gradcam"], raw, atol=1e-6, rtol=1e-5)


def test_a_clips_tokens_with_no_grid_handed_on_are_refused_in_one_line() -> None:
    # 1 + 392 tokens read as 8 x 7 x 7 or as 2 x 14 x 14 on a 16 x 224 x 224 clip: nothing says which
    with pytest.raises(camlens.layouts.LayoutError, match=r"^cannot lay 393 tokens out on a \(t, h, w\) grid") as e:
        resolve_layout((1, 393, 768), (16, 224, 224))
    assert "\n" not in str(e.value)
    found = resolve_layout((1, 393, 768), (16, 224, 224), token_grids={392: (8, 7, 7), 196: None})
    assert (found.kind, found.grid, found.prefix_tokens) == ("tokens", (8, 7, 7), 1)
    t = torch.randn(1, 393, 4)
    assert torch.equal(found.to_spatial(t), t[:, 1:].reshape(1, 8, 7, 7, 4).permute(0, 4, 1, 2, 3))
    assert torch.equal(found.to_native(found.to_spatial(t), t), t)
    with pytest.raises(camlens.layouts.LayoutError):  # a count seen with two grids is undecidable
        resolve_layout((1, 197, 768), (16, 224, 224), token_grids={196: None})


@pytest.mark.slow
def test_mvit_v2_s_is_explained_at_its_last_blocks_attention() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.video.mvit_v2_s(num_classes=3).eval()  # fixed to 16 x 224 x 224 clips
    x = clip(batch=1, t=16, size=224)
    result = camlens.explain(model, x, ["gradcam"])
    assert result.target_layer == "blocks.15.norm1"
    assert result.layout is not None and result.layout.grid == (8, 7, 7)
    assert result["gradcam"].shape == (1, 16, 224, 224)
    layer = dict(model.named_modules())[result.target_layer]
    raw = raw_gradcam_on_clip_tokens(model, layer, x, result.classes, (8, 7, 7))
    assert shows_something(raw)
    torch.testing.assert_close(result.raw["gradcam"], raw, atol=1e-5 * float(raw.abs().amax()), rtol=1e-4)
