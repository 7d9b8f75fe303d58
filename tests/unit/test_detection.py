"""explain_detections: per-box maps from one forward pass, checked against hand-written hooks and formulas."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import detection as tvd
from torchvision.models import resnet18
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

import camlens
from camlens.detection import DetectorAdapter, box_iou, drise_masks, explain_detections
from camlens.errors import ExplanationNote
from camlens.metrics import box_deletion, box_energy, box_insertion, box_pointing_game
from helpers import assert_untouched, snapshot

SIZE = dict(min_size=64, max_size=64)


def _resnet18_fpn() -> nn.Module:
    return _resnet_fpn_extractor(
        resnet18(weights=None), 5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256)
    )


@functools.cache
def detector(kind: str) -> nn.Module:
    """Random-weight torchvision detectors at 64 px (score thresholds at 0 so random weights give boxes)."""
    torch.manual_seed(0)
    if kind == "fasterrcnn":
        model = tvd.fasterrcnn_mobilenet_v3_large_fpn(
            weights=None, weights_backbone=None, num_classes=4, box_score_thresh=0.0, **SIZE
        )
    elif kind == "retinanet":
        model = tvd.RetinaNet(_resnet18_fpn(), num_classes=4, score_thresh=0.0, **SIZE)
    elif kind == "fcos":
        model = tvd.FCOS(_resnet18_fpn(), num_classes=4, score_thresh=0.0, **SIZE)
    elif kind == "ssdlite":
        model = tvd.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4, score_thresh=0.0)
    else:
        raise KeyError(kind)
    return model.eval()


def _images() -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.rand(3, 48, 64), torch.rand(3, 64, 56)]


def _hand_cam(model: nn.Module, images: list[torch.Tensor], image: int, box: int, layer: str, weighting: str):
    """Grad-CAM (or ODAM) of one box by hand: a forward hook, torch.autograd.grad of that box's score, the levels
    upsampled onto the network's input grid and summed, cropped to the resized image, resized back."""
    module = dict(model.named_modules())[layer]
    kept = {}

    def hook(_m, _i, output):
        kept["out"] = output

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            outputs = model([im.clone() for im in images])
    finally:
        handle.remove()
    out = kept["out"]
    levels = list(out.values()) if isinstance(out, dict) else [out]
    grads = torch.autograd.grad(outputs[image]["scores"][box], levels, allow_unused=True)
    transformed, _ = model.transform([im.clone() for im in images])
    h, w = transformed.image_sizes[image]
    grid = transformed.tensors.shape[-2:]
    total = torch.zeros(grid)
    for a, g in zip(levels, grads, strict=True):
        a = a[image].detach()
        g = torch.zeros_like(a) if g is None else g[image]
        if weighting == "gradcam":
            cam = (g.mean(dim=(1, 2))[:, None, None] * a).sum(0)
        else:  # odam: sum_k g_k * A_k per position
            cam = (g * a).sum(0)
        total += F.interpolate(cam[None, None], size=grid, mode="bilinear", align_corners=False)[0, 0]
    crop = total[:h, :w]
    size = images[image].shape[-2:]
    cam = F.interpolate(crop[None, None], size=size, mode="bilinear", align_corners=False)[0, 0].relu()
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    return cam, outputs[image]["boxes"][box].detach(), float(outputs[image]["scores"][box].detach())


def _hand_signed_map(model: nn.Module, image: torch.Tensor, value: torch.Tensor, levels: list[torch.Tensor]):
    """HiResCAM's signed map of one box by hand (one image): ``sum_k g_k * A_k`` of ``value``'s gradient at each
    level, upsampled onto the network's input grid and summed, cropped to the resized image, resized back."""
    grads = torch.autograd.grad(value, levels, retain_graph=True, allow_unused=True)
    transformed, _ = model.transform([image.clone()])
    h, w = transformed.image_sizes[0]
    grid = transformed.tensors.shape[-2:]
    total = torch.zeros(grid)
    for a, g in zip(levels, grads, strict=True):
        if g is not None:
            signed = (g[0] * a[0].detach()).sum(0)
            total += F.interpolate(signed[None, None], size=grid, mode="bilinear", align_corners=False)[0, 0]
    return F.interpolate(total[None, None, :h, :w], size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]


@pytest.mark.parametrize(
    ("kind", "layer", "method"),
    [
        ("fasterrcnn", "backbone", "gradcam"),
        ("retinanet", "backbone", "gradcam"),
        ("retinanet", "backbone.body.layer4", "odam"),
        ("fcos", "backbone", "odam"),
    ],
)
def test_one_box_equals_hook_and_autograd_of_its_score(kind, layer, method):
    model = detector(kind)
    images = _images() if kind == "fasterrcnn" else _images()[1:]  # two images of different sizes in one batch
    before = snapshot(model)
    result = explain_detections(model, images, [method], target_layer=layer, score_threshold=0.0, max_detections=3)
    assert_untouched(model, before)
    assert result.target_layer == layer
    for image in range(len(images)):
        found = result.detections[image]
        assert len(found) == 3
        assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)
        d = found[1]  # the second-best box: not the one a summed score would favour
        expected, box, score = _hand_cam(model, images, image, d.index, layer, method)
        assert d.box == pytest.approx(box.tolist())
        assert d.score == pytest.approx(score)
        assert d.maps[method].shape == images[image].shape[-2:]
        torch.testing.assert_close(d.maps[method], expected, atol=2e-5, rtol=1e-4)


def test_fused_levels_are_every_fpn_level_and_boxes_differ():
    result = explain_detections(
        detector("retinanet"), _images()[:1], ["gradcam"], score_threshold=0.0, max_detections=4
    )
    assert result.levels == ("0", "1", "2", "p6", "p7")
    maps = [d.maps["gradcam"] for d in result.detections[0]]
    assert all(float(m.min()) == 0.0 and float(m.max()) == 1.0 for m in maps)
    assert not torch.allclose(maps[0], maps[1])  # per-box, not one map per image


@pytest.mark.parametrize("kind", ["fcos", "ssdlite"])
def test_batched_backward_equals_one_backward_per_box(kind):
    model = detector(kind)
    images = _images()[:1]
    batched = explain_detections(model, images, ["gradcam", "layercam"], score_threshold=0.0, max_detections=4)
    loop = explain_detections(
        model, images, ["gradcam", "layercam"], score_threshold=0.0, max_detections=4, backward="loop"
    )
    # SSDlite's scores are computed per box on their windows (the test of _DenseBoxes checks them)
    assert batched.backward == ("per box" if kind == "ssdlite" else "batched") and loop.backward == "loop"
    for a, b in zip(batched.detections[0], loop.detections[0], strict=True):
        for name in ("gradcam", "layercam"):
            torch.testing.assert_close(a.raw[name], b.raw[name], atol=1e-5, rtol=1e-4)


def _forward_keeping(model: nn.Module, images: list[torch.Tensor], module: nn.Module):
    """The detector's outputs with autograd on, and ``{"out": module's output}`` from a forward hook."""
    kept = {}
    handle = module.register_forward_hook(lambda _m, _i, o: kept.update(out=o))
    try:
        with torch.enable_grad():
            outputs = model([im.clone() for im in images])
    finally:
        handle.remove()
    return outputs, kept


def test_coordinate_target_is_the_gradient_of_that_coordinate():
    model = detector("retinanet")
    images = _images()[:1]
    module = model.backbone.body.layer4
    outputs, kept = _forward_keeping(model, images, module)
    result = explain_detections(
        model, images, ["hirescam"], target_layer=module, score_threshold=0.0, max_detections=2, target="x2"
    )
    d = result.detections[0][0]
    (g,) = torch.autograd.grad(outputs[0]["boxes"][d.index, 2], [kept["out"]])
    signed = (g[0] * kept["out"][0].detach()).sum(0)
    transformed, _ = model.transform([im.clone() for im in images])
    h, w = transformed.image_sizes[0]
    up = F.interpolate(signed[None, None], size=transformed.tensors.shape[-2:], mode="bilinear", align_corners=False)
    expected = F.interpolate(up[:, :, :h, :w], size=(48, 64), mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(d.raw["hirescam"], expected, atol=1e-5, rtol=1e-4)
    assert result.target == "x2"


@pytest.mark.parametrize("target", ["score", "y1"])
def test_rcnn_boxes_rescored_on_their_own_proposals_equal_the_full_graph(target, monkeypatch):
    """An R-CNN's kept boxes are scored again on their own proposals (camlens.detection._RCNNBoxes); every box's
    map equals the hand-written gradient of that box's value through the full forward (all proposals)."""
    import camlens.detection as detection

    model = detector("fasterrcnn")
    images = _images()[:1]
    taken = []
    rescored = detection._RCNNBoxes.rescored

    def spy(self, outputs, sizes):
        found = rescored(self, outputs, sizes)
        taken.append(found is not outputs)
        return found

    monkeypatch.setattr(detection._RCNNBoxes, "rescored", spy)
    module = model.backbone  # every FPN level
    outputs, kept = _forward_keeping(model, images, module)
    result = explain_detections(
        model, images, ["hirescam"], target_layer=module, score_threshold=0.0, max_detections=12, target=target
    )
    assert taken == [True] and result.backward == "per box"
    levels = list(kept["out"].values())
    found = result.detections[0]
    assert len(found) == 12
    for d in found:
        value = outputs[0]["scores"][d.index] if target == "score" else outputs[0]["boxes"][d.index, 1]
        expected = _hand_signed_map(model, images[0], value, levels)
        scale = float(expected.abs().max()) + 1e-12
        torch.testing.assert_close(d.raw["hirescam"], expected, atol=1e-5 * scale, rtol=1e-4)
        assert d.box == pytest.approx(outputs[0]["boxes"][d.index].tolist(), abs=1e-3)


@pytest.mark.parametrize("side", [64, 160])
def test_retinanet_boxes_scored_on_their_own_windows_equal_the_full_graph(side, monkeypatch):
    """A RetinaNet's kept boxes are scored again on a window of their own level (camlens.detection._DenseBoxes:
    the head's convolutions without padding, zero outside the level after each); every box's map equals the
    hand-written gradient of its score through the full forward. At 64 px every window crosses the levels' edges,
    at 160 px most lie inside."""
    import camlens.detection as detection

    torch.manual_seed(0)
    model = tvd.RetinaNet(_resnet18_fpn(), num_classes=4, score_thresh=0.0, min_size=side, max_size=side).eval()
    images = [torch.rand(3, side * 3 // 4, side, generator=torch.Generator().manual_seed(3))]
    before = snapshot(model)
    calls = []
    scores = detection._DenseBoxes._scores

    def spy(self, *args):
        found = scores(self, *args)
        calls.append(found is not None)
        return found

    monkeypatch.setattr(detection._DenseBoxes, "_scores", spy)
    module = model.backbone  # every FPN level
    outputs, kept = _forward_keeping(model, images, module)
    result = explain_detections(model, images, ["hirescam"], target_layer=module, score_threshold=0.0,
                                max_detections=16)  # fmt: skip
    assert_untouched(model, before)
    assert calls == [True] and result.backward == "per box"
    levels = list(kept["out"].values())
    found = result.detections[0]
    assert len(found) == 16
    for d in found:
        expected = _hand_signed_map(model, images[0], outputs[0]["scores"][d.index], levels)
        scale = float(expected.abs().max()) + 1e-12
        assert scale > 1e-12
        torch.testing.assert_close(d.raw["hirescam"], expected, atol=1e-5 * scale, rtol=1e-4)


def test_ssdlite_boxes_scored_on_their_own_windows_equal_the_full_graph(monkeypatch):
    """SSDlite's head (a depthwise 3 x 3 with its batch norm and ReLU6, then a 1 x 1 per level) and SSD's softmax
    over the anchor's classes: every box's map through its window equals the gradient through the full forward."""
    import camlens.detection as detection

    torch.manual_seed(0)
    model = tvd.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4, score_thresh=0.0)
    for module in model.modules():  # larger weights than the initialisation's, so that the maps are not ~1e-18
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=0.2)
    model.eval()
    images = _images()[:1]
    calls = []
    scores = detection._DenseBoxes._scores
    monkeypatch.setattr(detection._DenseBoxes, "_scores",
                        lambda self, *a: calls.append(1) or scores(self, *a))  # fmt: skip
    module = model.backbone
    # SSDlite's levels are chained inside its backbone (each extra block reads the level before): each level is
    # explained as the head's own input (camlens' hook hands the head fresh leaves), so the hand-written
    # gradient is taken at leaves handed on in the same way
    kept = {}

    def leaves(_m, _i, output):
        kept["out"] = {k: v.detach().requires_grad_(True) for k, v in output.items()}
        return type(output)(kept["out"])

    handle = module.register_forward_hook(leaves)
    try:
        with torch.enable_grad():
            outputs = model([im.clone() for im in images])
    finally:
        handle.remove()
    result = explain_detections(model, images, ["hirescam"], target_layer=module, score_threshold=0.0,
                                max_detections=8)  # fmt: skip
    assert calls == [1] and result.backward == "per box"
    levels = list(kept["out"].values())
    for d in result.detections[0]:
        expected = _hand_signed_map(model, images[0], outputs[0]["scores"][d.index], levels)
        scale = float(expected.abs().max())
        assert scale > 1e-6
        torch.testing.assert_close(d.raw["hirescam"], expected, atol=1e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("layer", ["backbone.extra.0", "head.classification_head.module_list.0"])
def test_a_layer_that_feeds_some_levels_or_sits_in_the_head_keeps_the_full_graph(layer):
    # a level the head reads but the target layer does not feed (or the head's own input, before a layer inside
    # the head) has no gradient: the windows cannot carry the boxes' scores there, and the full graph is kept
    model = detector("ssdlite")
    images = _images()[:1]
    auto = explain_detections(model, images, ["gradcam"], target_layer=layer, score_threshold=0.0, max_detections=3)
    batched = explain_detections(model, images, ["gradcam"], target_layer=layer, score_threshold=0.0,
                                 max_detections=3, backward="batched")  # fmt: skip
    assert auto.backward != "per box"
    for a, b in zip(auto.detections[0], batched.detections[0], strict=True):
        torch.testing.assert_close(a.raw["gradcam"], b.raw["gradcam"])


def test_a_retinanet_with_its_own_head_is_explained_through_the_full_graph():
    # a user's head= without torchvision's classification head layout: no windows, and no AttributeError
    from torchvision.models.detection.retinanet import RetinaNetHead

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = RetinaNetHead(256, 9, 4)

        def forward(self, x):
            return self.inner(x)

        def compute_loss(self, *args):  # pragma: no cover - training only
            return self.inner.compute_loss(*args)

    torch.manual_seed(0)
    model = tvd.RetinaNet(_resnet18_fpn(), num_classes=4, head=Head(), score_thresh=0.0, **SIZE).eval()
    result = explain_detections(model, _images()[:1], ["gradcam"], score_threshold=0.0, max_detections=2)
    assert result.backward != "per box" and len(result.detections[0]) == 2


def test_a_retinanet_head_with_group_norms_keeps_the_full_graph():
    # a group norm reads the whole level, so a window does not give a box's logit: the batched backward is kept
    import functools as ft

    from torchvision.models.detection.retinanet import RetinaNetHead

    torch.manual_seed(0)
    head = RetinaNetHead(256, 9, 4, norm_layer=ft.partial(nn.GroupNorm, 32))
    model = tvd.RetinaNet(_resnet18_fpn(), num_classes=4, head=head, score_thresh=0.0, **SIZE).eval()
    images = _images()[:1]
    auto = explain_detections(model, images, ["gradcam"], score_threshold=0.0, max_detections=4)
    batched = explain_detections(model, images, ["gradcam"], score_threshold=0.0, max_detections=4,
                                 backward="batched")  # fmt: skip
    assert auto.backward in ("batched", "loop") and auto.backward != "per box"
    for a, b in zip(auto.detections[0], batched.detections[0], strict=True):
        torch.testing.assert_close(a.raw["gradcam"], b.raw["gradcam"])


def test_eigencam_is_shared_by_an_images_boxes_and_needs_no_gradient():
    result = explain_detections(
        detector("fasterrcnn"), _images()[:1], ["eigencam"], score_threshold=0.0, max_detections=3
    )
    first, second = result.detections[0][:2]
    assert torch.equal(first.maps["eigencam"], second.maps["eigencam"])
    assert result.backward is None


def test_reference_boxes_are_matched_by_iou_and_class():
    model = detector("fasterrcnn")
    images = _images()[:1]
    plain = explain_detections(model, images, ["gradcam"], score_threshold=0.0, max_detections=6)
    wanted = plain.detections[0][4]
    nudged = [v + 0.5 for v in wanted.box]
    with pytest.warns(ExplanationNote, match="no output box matches"):
        matched = explain_detections(
            model, images, ["gradcam"], boxes=[[nudged, [0.0, 0.0, 1.0, 1.0]]], labels=[[wanted.label, 1]]
        )
    hit, miss = matched.detections[0]
    assert hit.index is not None and hit.label == wanted.label
    assert hit.iou >= 0.5 and hit.reference == pytest.approx(nudged)
    # the best-overlapping box of that class, among all the detector's outputs
    out = model([images[0].clone()])[0]
    same = (out["labels"] == wanted.label).nonzero()[:, 0]
    ious = box_iou(torch.tensor([nudged]), out["boxes"].detach()[same])[0]
    assert hit.index == int(same[ious.argmax()])
    if hit.index == wanted.index:
        torch.testing.assert_close(hit.maps["gradcam"], wanted.maps["gradcam"])
    assert miss.index is None and math.isnan(miss.score) and not miss.maps["gradcam"].any()


def test_box_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    b = torch.tensor([[2.0, 2.0, 6.0, 6.0], [0.0, 0.0, 4.0, 4.0], [10.0, 10.0, 11.0, 11.0]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[4 / 28, 1.0, 0.0]]))


# ------------------------------------------------------------------------------------ a detector of our own


class FixedBoxes(nn.Module):
    """Two fixed boxes; class vector of box j = the mean of each channel of ``features(x)`` inside it."""

    boxes = torch.tensor([[4.0, 4.0, 20.0, 20.0], [12.0, 8.0, 30.0, 26.0]])

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> list[dict]:
        f = self.features(x)
        found = []
        for b in range(x.shape[0]):
            vectors = torch.stack(
                [f[b, :, int(y0) : int(y1), int(x0) : int(x1)].mean(dim=(1, 2)) for x0, y0, x1, y1 in self.boxes]
            )
            scores, labels = vectors.max(dim=1)
            found.append(dict(boxes=self.boxes.clone(), labels=labels, scores=scores, class_scores=vectors))
        return found


ADAPTER = DetectorAdapter(lambda model, images: model(torch.stack(images)), target_layer="features.0")


def test_drise_weights_by_hand_on_a_deterministic_detector():
    model = FixedBoxes().eval()
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3))
    count, grid, p = 24, 4, 0.5
    result = explain_detections(
        model, [image], ["drise"], adapter=ADAPTER, score_threshold=0.0, masks=count, mask_grid=grid,
        mask_probability=p, batch_size=count, seed=5,
    )  # fmt: skip
    masks = drise_masks(count, (32, 32), grid=grid, probability=p, generator=torch.Generator().manual_seed(5))
    torch.set_grad_enabled(False)  # the hand computation needs no graph (restored below)
    try:
        _check_drise(model, image, masks, result, count)
    finally:
        torch.set_grad_enabled(True)


def _check_drise(model, image, masks, result, count):
    clean = model(image[None])[0]
    for d in result.detections[0]:
        t = d.index
        expected = torch.zeros(32, 32, dtype=torch.float64)
        for m in masks:
            out = model((image * m)[None])[0]
            best = 0.0
            for j in range(2):
                x0, y0, x1, y1 = (float(v) for v in FixedBoxes.boxes[t])
                u0, v0, u1, v1 = (float(v) for v in FixedBoxes.boxes[j])
                inter = max(0.0, min(x1, u1) - max(x0, u0)) * max(0.0, min(y1, v1) - max(y0, v0))
                iou = inter / ((x1 - x0) * (y1 - y0) + (u1 - u0) * (v1 - v0) - inter)
                p_t, p_j = clean["class_scores"][t].double(), out["class_scores"][j].double()
                cosine = float(p_t @ p_j / (p_t.norm() * p_j.norm()))
                best = max(best, iou * cosine * float(out["scores"][j]))
            expected += best * m.double()
        expected /= count
        torch.testing.assert_close(d.raw["drise"], expected.float(), atol=1e-6, rtol=1e-5)
        assert float(d.maps["drise"].max()) == 1.0


def test_drise_weights_of_a_batch_equal_each_images_own():
    from camlens.detection import _drise_weights_batched

    g = torch.Generator().manual_seed(0)

    def boxes(n):
        corner = torch.rand(n, 2, generator=g) * 20
        return torch.cat([corner, corner + 1 + torch.rand(n, 2, generator=g) * 10], dim=1)

    targets, vectors = boxes(3), 0.1 + torch.rand(3, 4, generator=g)
    outputs = [
        dict(boxes=boxes(5), class_scores=torch.randn(5, 4, generator=g), scores=torch.rand(5, generator=g)),
        dict(boxes=boxes(0), class_scores=torch.zeros(0, 4), scores=torch.zeros(0)),
        dict(boxes=boxes(1), labels=torch.tensor([6]), scores=torch.rand(1, generator=g)),  # labels only: one-hot
        dict(boxes=boxes(2), class_scores=torch.randn(2, 4, generator=g), scores=torch.rand(2, generator=g),
             objectness=torch.rand(2, generator=g)),
        # boxes over every target, vectors against them: every similarity negative, so is each maximum
        dict(boxes=torch.tensor([[0.0, 0, 40, 40], [1.0, 1, 39, 39]]), class_scores=-torch.rand(2, 4, generator=g),
             scores=torch.rand(2, generator=g)),
    ]  # fmt: skip
    from camlens.detection import _class_vectors, _confidence, drise_weights

    expected = torch.stack(
        [drise_weights(targets, vectors, o["boxes"], _class_vectors(o, 4), _confidence(o)) for o in outputs]
    )
    got = _drise_weights_batched(targets, vectors, outputs)
    assert bool((expected[4] < 0).all()) and bool((expected[1] == 0).all())
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(_drise_weights_batched(targets, vectors, outputs[1:2]), torch.zeros(1, 3))


def test_class_nms_keeps_what_nms_keeps_class_by_class():
    from torchvision.ops import nms

    from camlens.detection import class_nms

    g = torch.Generator().manual_seed(0)
    for count, classes in ((1500, 40), (300, 3), (1, 1)):
        corner = torch.rand(count, 2, generator=g) * 300 - 40  # boxes left of and above the image too
        boxes = torch.cat([corner, corner + 5 + torch.rand(count, 2, generator=g) * 80], dim=1)
        scores, labels = torch.rand(count, generator=g), torch.randint(0, classes, (count,), generator=g)
        kept = []
        for c in range(classes):  # the definition: NMS within each class alone
            index = (labels == c).nonzero()[:, 0]
            kept.append(index[nms(boxes[index], scores[index], 0.7)])
        expected = torch.cat(kept)
        expected = expected[scores[expected].argsort(descending=True)]
        assert torch.equal(class_nms(boxes, scores, labels, 0.7), expected)
    assert class_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.7).numel() == 0


def test_drise_masks_are_rise_masks():
    masks = drise_masks(400, (30, 40), grid=5, probability=0.3, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (400, 30, 40) and masks.min() >= 0 and masks.max() <= 1
    assert abs(float(masks.mean()) - 0.3) < 0.03  # bilinear upsampling keeps the mean keep probability
    again = drise_masks(400, (30, 40), grid=5, probability=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)


def test_guided_backprop_is_the_input_gradient_under_the_guided_rule():
    model = FixedBoxes().eval()
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3))
    before = snapshot(model)
    result = explain_detections(
        model, [image], ["guided_backprop", "guided_gradcam", "gradcam"], adapter=ADAPTER, score_threshold=0.0
    )
    assert_untouched(model, before)
    # Springenberg's rule by hand: at the ReLU, pass the gradient where its input > 0 and the gradient > 0
    x = image.clone().requires_grad_(True)
    pre = model.features[0](x[None])
    out = torch.relu(pre)
    for d in result.detections[0]:
        vector = torch.stack(
            [out[0, :, int(y0) : int(y1), int(x0) : int(x1)].mean(dim=(1, 2)) for x0, y0, x1, y1 in FixedBoxes.boxes]
        )
        (g_out,) = torch.autograd.grad(vector[d.index].max(), [out], retain_graph=True)
        g_pre = (pre > 0) * g_out.clamp(min=0)
        (expected,) = torch.autograd.grad(pre, [x], g_pre, retain_graph=True)
        torch.testing.assert_close(d.raw["guided_backprop"], expected, atol=1e-6, rtol=1e-5)
        gb = expected.abs().amax(dim=0)
        torch.testing.assert_close(d.maps["guided_backprop"], (gb - gb.min()) / (gb.max() - gb.min()))
        torch.testing.assert_close(d.raw["guided_gradcam"], expected * d.maps["gradcam"][None])


def test_box_deletion_and_insertion_rematch_the_box_at_every_step_by_hand():
    model = FixedBoxes().eval()
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3))
    maps = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(4))
    clean = model(image[None])[0]
    labels = clean["labels"]
    for insert in (False, True):
        metric = box_insertion if insert else box_deletion
        result = metric(model, image, maps, FixedBoxes.boxes, labels, adapter=ADAPTER, steps=8, baseline="zeros")
        assert result.higher_is_better is insert
        for k in range(2):
            order = torch.argsort(maps[k].flatten(), descending=True, stable=True)
            curve = []
            for count in range(0, 1024 + 1, 128):
                changed = torch.zeros(1024, dtype=torch.bool)
                changed[order[:count]] = True
                changed = changed.view(1, 32, 32)
                x = torch.where(changed, image, 0.0) if insert else torch.where(changed, 0.0, image)
                with torch.no_grad():
                    out = model(x[None])[0]
                # the same fixed box is the only one with IoU >= 0.5; it counts while its label is unchanged
                curve.append(float(out["scores"][k]) if int(out["labels"][k]) == int(labels[k]) else 0.0)
            torch.testing.assert_close(result.curve[k], torch.tensor(curve))
            area = sum((curve[i] + curve[i + 1]) / 2 for i in range(8)) / 8
            assert float(result.values[k]) == pytest.approx(area, abs=1e-6)


def test_box_pointing_and_energy_use_each_maps_own_box():
    maps = torch.zeros(2, 20, 20)
    maps[0, 2:4, 2:4] = 1.0
    maps[1, 2:4, 2:4] = 1.0
    maps[1, 15, 15] = 4.0
    boxes = [[0, 0, 5, 5], [10, 10, 20, 20]]
    torch.testing.assert_close(box_pointing_game(maps, boxes, tolerance=0).values, torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(box_energy(maps, boxes).values, torch.tensor([1.0, 0.5]))


@pytest.mark.parametrize("config", ["yolov8n.yaml"])
def test_yolo_box_is_the_class_score_of_its_anchor_in_the_raw_head(config):
    pytest.importorskip("ultralytics")
    import os

    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(config, nc=4, verbose=False)
    # batch-norm statistics from one random batch, so random-weight activations keep their scale in eval mode
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 64, 96))
    model.eval()
    images = [torch.rand(3, 64, 96), torch.rand(3, 50, 64)]
    before = snapshot(model)
    result = explain_detections(model, images, ["gradcam"], score_threshold=0.0, max_detections=2)
    assert_untouched(model, before)
    # each box's class score from its level's window of the classification branch (camlens.detection._YoloBoxes),
    # checked below against the gradient through the whole head
    assert result.backward == "per box"
    head = f"model.{len(model.model) - 1}"
    assert result.target_layer == f"{head} (input)" and result.levels == ("0", "1", "2")
    # by hand: the head's input levels, the padded batch, the anchor whose box and class score the result names
    # the head's inputs as leaves: each level's own gradient (in the neck, P4 and P5 are computed from P3, and the
    # derivative through those paths belongs to the layers before the head, not to the levels it reads)
    kept = {}

    def leaves(_m, args):
        kept["levels"] = [level.detach().requires_grad_(True) for level in args[0]]
        return (list(kept["levels"]),)

    handle = model.model[-1].register_forward_pre_hook(leaves)
    batch = torch.full((2, 3, 64, 96), 114 / 255)
    batch[0] = images[0]
    batch[1, :, :50, :64] = images[1]
    try:
        with torch.enable_grad():
            raw = model(batch)[0]
    finally:
        handle.remove()
    d = result.detections[1][0]
    xywh = raw[1, :4].detach().T
    xyxy = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    anchor = int((xyxy - torch.tensor(d.box)).abs().sum(1).argmin())
    assert float(raw[1, 4 + d.label, anchor].detach()) == pytest.approx(d.score)
    assert d.label == int(raw[1, 4:, anchor].argmax())
    grads = torch.autograd.grad(raw[1, 4 + d.label, anchor], kept["levels"])
    total = torch.zeros(64, 96)
    for a, g in zip(kept["levels"], grads, strict=True):
        cam = (g[1].mean(dim=(1, 2))[:, None, None] * a[1].detach()).sum(0)
        total += F.interpolate(cam[None, None], size=(64, 96), mode="bilinear", align_corners=False)[0, 0]
    cam = total[:50, :64].relu()
    torch.testing.assert_close(d.maps["gradcam"], (cam - cam.min()) / (cam.max() - cam.min()), atol=2e-5, rtol=1e-4)


def test_yolo11_boxes_on_their_windows_equal_the_full_graph():
    # YOLO11's classification branch has depthwise convolutions; one backward per box through the whole recorded
    # head (backward="loop") is the reference
    pytest.importorskip("ultralytics")
    import os

    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolo11n.yaml", nc=4, verbose=False).eval()
    with torch.no_grad():  # class biases at 0: scores near 0.5, so that boxes pass the head's confidence
        for branch in model.model[-1].cv3:
            branch[-1].bias.zero_()
    images = [torch.rand(3, 64, 96, generator=torch.Generator().manual_seed(2))]
    windows = explain_detections(model, images, ["hirescam"], score_threshold=0.0, max_detections=8)
    loop = explain_detections(model, images, ["hirescam"], score_threshold=0.0, max_detections=8, backward="loop")
    assert windows.backward == "per box" and loop.backward == "loop" and len(windows.detections[0]) == 8
    for a, b in zip(windows.detections[0], loop.detections[0], strict=True):
        scale = float(b.raw["hirescam"].abs().max())
        assert scale > 0
        torch.testing.assert_close(a.raw["hirescam"], b.raw["hirescam"], atol=1e-5 * scale, rtol=1e-4)


def test_errors_name_the_problem():
    model = detector("fasterrcnn")
    with pytest.raises(ValueError, match="unknown detection method 'gradkam'"):
        explain_detections(model, _images(), ["gradkam"])
    with pytest.raises(ValueError, match="image 0 must be a floating-point"):
        explain_detections(model, [torch.zeros(3, 8, 8, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="target must be one of"):
        explain_detections(model, _images(), target="area")
    with pytest.raises(ValueError, match="no objectness"):
        explain_detections(model, _images(), target="objectness", score_threshold=0.0)
    with pytest.raises(ValueError, match="adapter=camlens.detection.DetectorAdapter"):
        explain_detections(nn.Conv2d(3, 3, 1), _images())
    model.train()
    try:
        with pytest.raises(ValueError, match="training mode"):
            explain_detections(model, _images())
    finally:
        model.eval()


def test_no_box_above_the_threshold_is_a_note():
    with pytest.warns(ExplanationNote, match="no box with a score of at least 0.99"):
        result = explain_detections(detector("fasterrcnn"), _images()[:1], ["gradcam"], score_threshold=0.99)
    assert result.detections == [[]]


def test_exported_lazily():
    assert camlens.explain_detections is explain_detections
