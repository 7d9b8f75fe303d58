"""explain_segmentation: Seg-Grad-CAM's class scores, every class from one forward pass, never the logits."""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import segmentation as tv_segmentation

import camlens
from camlens.errors import ExplanationNote
from camlens.segmentation import _search_layer, explain_segmentation, segmentation_layer
from helpers import assert_untouched, calibrate_norms, corr, snapshot

SIZE = 64
# the documented automatic layer of each torchvision family (see camlens.segmentation)
FAMILY_LAYERS = {
    "fcn_resnet50": "backbone.layer4",
    "deeplabv3_resnet50": "classifier.0",
    "deeplabv3_mobilenet_v3_large": "classifier.0",
    "lraspp_mobilenet_v3_large": "backbone.16",
}
# the input of each head's final 1 x 1 classifier: Grad-CAM there is the class's own logit map
LOGIT_INPUTS = {
    "fcn_resnet50": "classifier.3",
    "deeplabv3_resnet50": "classifier.3",
    "deeplabv3_mobilenet_v3_large": "classifier.3",
}


@functools.cache
def segmenter(arch: str) -> nn.Module:
    torch.manual_seed(0)
    model = getattr(tv_segmentation, arch)(weights=None, weights_backbone=None, num_classes=4)
    return calibrate_norms(model, 96)


def images(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def hand_gradcam(model: nn.Module, x: torch.Tensor, layer: str, regions: torch.Tensor, classes: list[int]):
    """Seg-Grad-CAM by hand: a forward hook keeps the layer's output, torch.autograd.grad differentiates
    ``sum_{ij in R_c} y_c(i, j)`` to it, ``w_k = mean_ij g_kij``, map ``sum_k w_k A_k`` (before the ReLU)."""
    kept = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda _m, _i, out: kept.update(a=out))
    try:
        with torch.enable_grad():
            out = model(x)["out"]
            maps = []
            for k, c in enumerate(classes):
                score = (out[:, c] * regions[:, k]).sum()
                (g,) = torch.autograd.grad(score, kept["a"], retain_graph=True)
                maps.append((g.mean(dim=(2, 3))[:, :, None, None] * kept["a"]).sum(dim=1).detach())
    finally:
        handle.remove()
    return out.detach(), torch.stack(maps, dim=1)


@pytest.mark.parametrize(
    "arch",
    [pytest.param("fcn_resnet50", marks=pytest.mark.slow), "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"],
)
def test_gradcam_of_each_class_equals_a_hand_written_seg_gradcam(arch):
    model, x = segmenter(arch), images()
    result = explain_segmentation(model, x, ["gradcam"])
    with torch.no_grad():
        predicted = model(x)["out"].argmax(dim=1)
    classes = sorted(torch.unique(predicted).tolist())
    assert list(result.classes) == classes and len(classes) >= 2  # the batched backward is exercised
    assert torch.equal(result.predicted, predicted)
    regions = predicted[:, None] == torch.tensor(classes)[None, :, None, None]
    out, expected = hand_gradcam(model, x, result.target_layer, regions.float(), classes)
    got = result.raw["gradcam"]
    assert got.shape == expected.shape == (2, len(classes), *got.shape[-2:])
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * scale)
    scores = (out[:, classes] * regions).flatten(2).sum(2)
    torch.testing.assert_close(result.scores, scores, rtol=1e-4, atol=1e-4)
    # the displayed map: ReLU, bilinear upsampling to the input, per-map min-max
    one = F.interpolate(torch.relu(expected), size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    low, high = one.amin(dim=(2, 3), keepdim=True), one.amax(dim=(2, 3), keepdim=True)
    shown = high[:, :, 0, 0] > 0  # an all-zero map (a class absent from the image) stays zero
    assert shown.any()
    expected_maps = (one - low) / (high - low).clamp_min(1e-30)
    torch.testing.assert_close(result["gradcam"][shown], expected_maps[shown], rtol=1e-3, atol=1e-4)
    assert float(result["gradcam"][~shown].abs().sum()) == 0.0
    assert result["gradcam"].shape == (2, len(classes), SIZE, SIZE)


class Readers(nn.Module):
    """A layer output read by every kind of reader the gradient-sums route knows: a strided, padded, dilated,
    grouped convolution, a spatial mean and an adaptive average pooling to 3 x 2 (overlapping windows)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(6, 4, 3, stride=2, padding=(1, 2), dilation=(2, 1), groups=2)
        self.plain = nn.Conv2d(6, 5, (1, 3), padding=(0, 1))
        self.mix = nn.Linear(6, 5)

    def forward(self, a):
        x = self.conv(a).relu()  # (B, 4, 5, 6) from (B, 6, 11, 10)
        y = self.plain(a) * torch.sigmoid(self.mix(a.mean(dim=(2, 3))))[:, :, None, None]
        z = F.adaptive_avg_pool2d(a, (3, 2))
        pooled = y.square().sum(dim=(2, 3)) + z.sum(dim=(2, 3))[:, :5]
        return x.sum(dim=(2, 3)) @ torch.arange(12.0).view(4, 3) + pooled[:, :3]


def test_gradient_sums_equal_the_full_gradient_summed_over_the_positions():
    from camlens.segmentation import gradient_sums

    torch.manual_seed(0)
    model = Readers()
    a = torch.randn(2, 6, 11, 10, requires_grad=True)
    scores = model(a.clone())  # (B, K = 3): the engine hands the model a copy of the layer output
    sums = gradient_sums(scores, a)
    full = torch.stack(
        [torch.autograd.grad(scores[:, c].sum(), a, retain_graph=True)[0].sum(dim=(2, 3)) for c in range(3)]
    )
    assert sums is not None and sums.shape == (3, 2, 6) and not sums.requires_grad
    torch.testing.assert_close(sums, full, rtol=1e-5, atol=1e-5)
    # read otherwise (a product with itself, a max pooling, the output itself without the copy): no route
    everything = lambda t: t.mean(dim=None).expand(2, 3, 1, 1)  # noqa: E731  (the mean of everything)
    for reader in (lambda t: t * t, lambda t: F.max_pool2d(t, 2), everything):
        out = reader(a.clone()).sum(dim=(2, 3))[:, :3]
        assert gradient_sums(out, a) is None
    assert gradient_sums(model(a), a) is None
    # a norm over the positions after the readers: the sums may vanish into rounding, so no route
    norm = nn.GroupNorm(2, 4)
    assert gradient_sums(norm(model.conv(a.clone())).sum(dim=(2, 3))[:, :3], a) is None


def test_gradcam_alone_still_warns_when_a_norm_makes_its_weights_vanish():
    class Normed(nn.Module):  # the score ignores a constant shift of each stem channel (the instance norm)
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
            self.mid = nn.Sequential(nn.Conv2d(8, 6, 1), nn.InstanceNorm2d(6), nn.ReLU())
            self.cls = nn.Conv2d(6, 3, 1)

        def forward(self, x):
            return F.interpolate(self.cls(self.mid(self.stem(x))), size=x.shape[-2:], mode="bilinear")

    torch.manual_seed(0)
    model, x = Normed().eval(), torch.randn(2, 3, 16, 16)
    for methods in (["gradcam"], ["gradcam", "layercam"]):
        with pytest.warns(ExplanationNote, match="channel weights .* vanish"):
            result = explain_segmentation(model, x, methods, target_layer="stem", region="image")
        assert result.gradients is not None  # the full gradient, which tells the vanishing apart


@pytest.mark.parametrize("arch", ["deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"])
def test_gradcam_alone_takes_the_gradient_sums_route_with_the_same_maps(arch):
    model, x = segmenter(arch), images()
    fast = explain_segmentation(model, x, ["gradcam"], classes=[0, 1, 2, 3], region="image")
    full = explain_segmentation(model, x, ["gradcam", "layercam"], classes=[0, 1, 2, 3], region="image")
    assert fast.gradients is None and full.gradients is not None  # the route was taken, and not taken
    assert not any(t.requires_grad for t in (*fast.raw.values(), *fast.maps.values(), fast.scores, fast.logits))
    scale = float(full.raw["gradcam"].abs().max())
    torch.testing.assert_close(fast.raw["gradcam"], full.raw["gradcam"], rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(fast["gradcam"], full["gradcam"], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    "arch", [pytest.param(a, marks=pytest.mark.slow) if "resnet" in a else a for a in FAMILY_LAYERS]
)
def test_the_automatic_layer_is_the_family_layer_and_not_the_logits(arch):
    model, x = segmenter(arch), images()
    result = explain_segmentation(model, x, ["gradcam"])
    assert result.target_layer == FAMILY_LAYERS[arch]
    logits = result.logits
    for k, c in enumerate(result.classes):
        for b in range(x.shape[0]):
            raw = result.raw["gradcam"][b, k]
            reference = F.interpolate(logits[b : b + 1, c : c + 1], size=raw.shape, mode="area")[0, 0]
            if result.regions[b, k].any():
                assert corr(raw, reference) < 0.99
    if arch in LOGIT_INPUTS:
        # at the classifier's input the map IS the class's logit map (what the automatic layer avoids)
        c = result.classes[0]
        at_logits = explain_segmentation(model, x, ["gradcam"], classes=[c], region="image",
                                         target_layer=LOGIT_INPUTS[arch])  # fmt: skip
        kept = {}
        handle = model.classifier[4].register_forward_hook(lambda _m, _i, out: kept.update(y=out))
        try:
            with torch.no_grad():
                model(x)
        finally:
            handle.remove()
        for b in range(x.shape[0]):
            assert corr(at_logits.raw["gradcam"][b, 0], kept["y"][b, c]) > 0.9999


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(FAMILY_LAYERS))
def test_the_generic_rule_lands_on_each_family_layer(arch):
    """For a model of no known family: the deepest map whose path to the logits mixes positions and whose map
    is not the logit map. On the torchvision families it agrees with their documented layer."""
    assert _search_layer(segmenter(arch), images(1)) == FAMILY_LAYERS[arch]


@pytest.mark.slow
def test_deeplabv3_resnet101_uses_the_aspp_output():
    torch.manual_seed(0)
    model = tv_segmentation.deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=3).eval()
    assert segmentation_layer(model, images(1))[0] == "classifier.0"


class TinySegmenter(nn.Module):
    """A user's segmenter: a body, a head with one 3 x 3 convolution, an upsampling; ``wrap`` picks the output."""

    def __init__(self, wrap: str = "tensor") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()
        )
        self.head = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))
        self.wrap = wrap
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = F.interpolate(self.head(self.body(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.wrap == "dict":
            return {"logits": out}
        if self.wrap == "output":
            return SegmenterOutput(logits=out)
        return out


@dataclass
class SegmenterOutput:
    logits: torch.Tensor


def test_a_users_model_returning_a_tensor_dict_or_output_object():
    x = images(2, seed=3)[..., :32, :32]
    results = {}
    for wrap in ("tensor", "dict", "output"):
        model = TinySegmenter(wrap).eval()
        results[wrap] = explain_segmentation(model, x, ["gradcam", "layercam"], region="image")
        # the generic rule: the deepest map whose path to the logits mixes positions (the head's 3 x 3 input)
        assert results[wrap].target_layer in ("body", "body.3")
        calls = model.calls
        explain_segmentation(model, x, ["gradcam"], region="image")
        assert model.calls == calls + 1  # the choice is remembered: one forward per call
    for wrap in ("dict", "output"):
        for name in ("gradcam", "layercam"):
            torch.testing.assert_close(results[wrap][name], results["tensor"][name])


def test_regions_pixel_image_and_masks_give_their_scores():
    model, x = segmenter("lraspp_mobilenet_v3_large"), images()
    with torch.no_grad():
        out = model(x)["out"]
    whole = explain_segmentation(model, x, ["gradcam"], classes=[0, 3], region="image")
    torch.testing.assert_close(whole.scores, out[:, [0, 3]].sum(dim=(2, 3)), rtol=1e-4, atol=1e-3)
    pixel = explain_segmentation(model, x, ["gradcam"], classes=[1], region=(5, 40))
    torch.testing.assert_close(pixel.scores[:, 0], out[:, 1, 5, 40], rtol=1e-4, atol=1e-5)
    assert pixel.regions.sum() == x.shape[0]
    mask = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    mask[:, 10:30, 20:50] = True
    masked = explain_segmentation(model, x, ["gradcam"], classes=[2], masks=mask)
    torch.testing.assert_close(masked.scores[:, 0], (out[:, 2] * mask).sum(dim=(1, 2)), rtol=1e-4, atol=1e-3)
    # one mask per class, and the default classes: those predicted inside the masks
    inside = explain_segmentation(model, x, ["gradcam"], masks=mask)
    assert set(inside.classes) == set(out.argmax(1)[mask].unique().tolist())
    per_class = torch.stack([mask, ~mask], dim=1)
    two = explain_segmentation(model, x, ["gradcam"], classes=[1, 2], masks=per_class)
    torch.testing.assert_close(two.scores[:, 1], (out[:, 2] * ~mask).sum(dim=(1, 2)), rtol=1e-4, atol=1e-3)


def test_the_model_is_left_as_found_also_when_the_call_raises():
    model, x = segmenter("deeplabv3_mobilenet_v3_large"), images()
    model.classifier[4].weight.grad = torch.ones_like(model.classifier[4].weight)
    try:
        before = snapshot(model)
        explain_segmentation(model, x, ["gradcam", "gradcam++"])
        assert_untouched(model, before)
        with pytest.raises(ValueError, match="out of range"):
            explain_segmentation(model, x, ["gradcam"], classes=[7])
        assert_untouched(model, before)
    finally:
        model.classifier[4].weight.grad = None


def test_a_class_absent_from_an_image_gets_a_zero_map_and_a_note():
    model, x = segmenter("deeplabv3_mobilenet_v3_large"), images()
    result = explain_segmentation(model, x, ["gradcam"])
    present = result.regions.flatten(2).any(dim=2)  # (B, K)
    absent = (~present).nonzero()
    if len(absent) == 0:
        pytest.skip("every class is present in every image")
    b, k = absent[0].tolist()
    assert float(result["gradcam"][b, k].abs().max()) == 0.0
    assert any(f"image {b} class {result.classes[k]}" in note for note in result.warnings)


def test_bad_input_is_one_clear_error():
    model, x = segmenter("lraspp_mobilenet_v3_large"), images()
    with pytest.raises(ValueError, match="scorecam.*|explain_segmentation computes"):
        explain_segmentation(model, x, ["scorecam"])
    with pytest.raises(ValueError, match="region must be"):
        explain_segmentation(model, x, ["gradcam"], region="everywhere")
    with pytest.raises(ValueError, match="outside"):
        explain_segmentation(model, x, ["gradcam"], region=(64, 0))
    with pytest.raises(ValueError, match="masks are"):
        explain_segmentation(model, x, ["gradcam"], masks=torch.ones(2, 10, 10))
    classifier = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with pytest.raises(ValueError, match=r"dense class scores \(B, C, h, w\)"):
        explain_segmentation(classifier, x, ["gradcam"], target_layer="0")


def test_explain_on_a_dense_output_names_explain_segmentation():
    model, x = segmenter("lraspp_mobilenet_v3_large"), images(1)
    with pytest.raises(ValueError, match="explain_segmentation"):
        camlens.explain(model, x, ["gradcam"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = camlens.explain(model, x, ["gradcam"], targets=lambda out: out["out"][:, 1].flatten(1).sum(1))
    assert any("explain_segmentation" in note for note in result.warnings)
    assert any(issubclass(w.category, ExplanationNote) and "explain_segmentation" in str(w.message) for w in caught)
    # an explicit layer is the user's choice: no note
    chosen = camlens.explain(model, x, ["gradcam"], "backbone.16", lambda out: out["out"][:, 1].flatten(1).sum(1))
    assert not any("explain_segmentation" in note for note in chosen.warnings)


def test_lazy_export():
    assert camlens.explain_segmentation is explain_segmentation
    assert "explain_segmentation" in camlens.__all__


HF_LAYERS = {
    "segformer": "segformer.stages.3",
    "upernet": "decode_head.bottleneck",
    "mask2former": "model.pixel_level_module.encoder.hidden_states_norms.stage4",
}


def hugging_face(family: str) -> nn.Module:
    """A tiny Hugging Face segmenter built from its config (random weights, nothing downloaded)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if family == "segformer":
        config = transformers.SegformerConfig(
            num_labels=4, hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 1, 2, 2], depths=[1, 1, 1, 1],
            decoder_hidden_size=32,
        )  # fmt: skip
        return transformers.SegformerForSemanticSegmentation(config).eval()
    if family == "upernet":
        backbone = transformers.ConvNextConfig(
            hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], out_features=["stage1", "stage2", "stage3", "stage4"]
        )
        config = transformers.UperNetConfig(
            backbone_config=backbone, num_labels=4, hidden_size=16, auxiliary_in_channels=24, use_auxiliary_head=False
        )
        return transformers.UperNetForSemanticSegmentation(config).eval()
    backbone = transformers.SwinConfig(
        embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2, image_size=SIZE,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    config = transformers.Mask2FormerConfig(
        backbone_config=backbone, num_labels=4, hidden_dim=32, mask_feature_size=32, feature_size=32, num_queries=5,
        encoder_layers=1, decoder_layers=2, encoder_feedforward_dim=32, dim_feedforward=32, num_attention_heads=2,
        common_stride=4, use_pretrained_backbone=False,
    )  # fmt: skip
    return transformers.Mask2FormerForUniversalSegmentation(config).eval()


def semantic_map(output) -> torch.Tensor:
    """The class map each family's own semantic post-processing reads, written out here."""
    if hasattr(output, "masks_queries_logits"):  # Mask2Former: class probabilities (no-object dropped) x mask
        probabilities = output.class_queries_logits.softmax(dim=-1)[..., :-1]
        return (probabilities[:, :, :, None, None] * output.masks_queries_logits.sigmoid()[:, :, None]).sum(dim=1)
    return output.logits


@pytest.mark.parametrize("family", list(HF_LAYERS))
def test_hugging_face_segmenters_match_a_hand_written_seg_gradcam(family):
    model, x = hugging_face(family), images()
    result = explain_segmentation(model, x, ["gradcam", "layercam"])
    assert result.target_layer == HF_LAYERS[family]
    kept = {}
    module = dict(model.named_modules())[result.target_layer]
    handle = module.register_forward_hook(lambda _m, _i, out: kept.update(a=out))
    try:
        with torch.enable_grad():
            scores = semantic_map(model(x))
    finally:
        handle.remove()
    assert scores.shape[-2:] == result.predicted.shape[-2:]
    predicted = scores.argmax(dim=1)
    assert torch.equal(result.predicted, predicted)
    a = kept["a"]
    if a.dim() == 3:  # tokens (B, N, C) on the stride-32 grid
        side = SIZE // 32
        a_grid = lambda t: t.reshape(t.shape[0], side, side, -1).permute(0, 3, 1, 2)  # noqa: E731
    else:
        a_grid = lambda t: t  # noqa: E731
    for k, c in enumerate(result.classes):
        score = (scores[:, c] * (predicted == c)).sum()
        (g,) = torch.autograd.grad(score, a, retain_graph=True)
        A, G = a_grid(a.detach()), a_grid(g)
        layercam = (torch.relu(G) * A).sum(dim=1)  # LayerCAM (Jiang et al. 2021): position-wise positive gradients
        scale = float(layercam.abs().max())
        torch.testing.assert_close(result.raw["layercam"][:, k], layercam, rtol=1e-4, atol=1e-5 * scale)
        gradcam = (G.mean(dim=(2, 3))[:, :, None, None] * A).sum(dim=1)
        if family == "mask2former":
            # every path from the backbone runs through a group norm of one channel per group: the gradient's
            # spatial mean vanishes per channel, so Grad-CAM's weights are rounding, and a note says so
            assert float(G.mean(dim=(2, 3)).abs().max()) < 1e-4 * float(G.abs().max())
            assert any("gradcam: at layer" in note and "vanish" in note for note in result.warnings)
        else:
            scale = float(gradcam.abs().max())
            torch.testing.assert_close(result.raw["gradcam"][:, k], gradcam, rtol=1e-4, atol=1e-5 * scale)
            alone = explain_segmentation(model, x, ["gradcam"])  # Grad-CAM alone (these readers: the full backward)
            torch.testing.assert_close(alone.raw["gradcam"][:, k], gradcam, rtol=1e-4, atol=1e-5 * scale)
    assert result["gradcam"].shape == (2, len(result.classes), SIZE, SIZE)


def test_class_metrics_match_their_definitions_by_hand():
    from camlens.metrics import class_deletion, class_energy, class_insertion, class_pointing_game

    model = TinySegmenter().eval()
    x = images(1, seed=5)[..., :16, :16]
    result = explain_segmentation(model, x, ["gradcam"], classes=[0, 2], region="image")
    maps, regions = result["gradcam"][0], result.regions[0]
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, :8] = True
    masks[1, 8:] = True
    energy = class_energy(maps, masks)
    assert energy.higher_is_better
    torch.testing.assert_close(energy.values, (maps * masks).flatten(1).sum(1) / maps.flatten(1).sum(1))
    peak = maps.flatten(1).argmax(1)
    hits = masks.flatten(1).gather(1, peak[:, None])[:, 0].float()
    assert torch.equal(class_pointing_game(maps, masks, tolerance=0).values, hits)
    deletion = class_deletion(model, x[0], maps, [0, 2], regions, steps=4)
    insertion = class_insertion(model, x[0], maps, [0, 2], regions, baseline="zeros", steps=4)
    assert not deletion.higher_is_better and insertion.higher_is_better
    for k, c in enumerate([0, 2]):
        order = torch.argsort(maps[k].flatten(), descending=True, stable=True)
        for insert, metric in ((False, deletion), (True, insertion)):
            curve = []
            for count in (0, 64, 128, 192, 256):
                keep = torch.zeros(256, dtype=torch.bool)
                keep[order[:count]] = True
                keep = keep.view(1, 16, 16)
                image = torch.where(keep, x[0], 0.0) if insert else torch.where(keep, 0.0, x[0])
                with torch.no_grad():
                    curve.append(float((model(image[None])[0, c] * regions[k]).sum()))
            torch.testing.assert_close(metric.curve[k], torch.tensor(curve), rtol=1e-4, atol=1e-4)
            expected = sum((curve[i] + curve[i + 1]) / 2 * 0.25 for i in range(4))
            assert abs(float(metric.values[k]) - expected) < 1e-3 * max(1.0, abs(expected))
