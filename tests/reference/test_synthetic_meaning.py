"""Meaning without pretrained weights: tiny models trained here on the coloured-patch task
(:mod:`camlens.synthetic`: the class is the colour of an 8 x 8 patch at a random place in a 32 x 32
grey texture, with a grey distractor). The automatic layer's Grad-CAM is compared with chance (the patch's
share of the image, 6.25%) and with hand-picked expert layers.

Expert layers: for the ViT, pytorch-grad-cam's FAQ choice (the last block's ``norm1``), which the
automatic rule must find by itself; for the CNN, the layer the Grad-CAM authors use (the last
convolution's rectified output, their ``relu5_3``; pytorch-grad-cam's ``features[-1]``), which the rule
finds too, and the last convolution before its batch norm and ReLU, which does better (strict xfail).

Across training seeds (``python benchmarks/synthetic_meaning.py``: 10 ViT seeds, 500 test images, in
``docs/evaluation/synthetic_meaning.md``) Grad-CAM on the ViT is not stable: 18.1% on average, below twice
chance on 5 seeds of 10; on seed 0 its peak is in the patch three times as often as chance, on seed 1
almost never, because at a LayerNorm output the sign of
the channel-mean weights is arbitrary: on half of the images the signed map is negative at every position
(the displayed map is zero everywhere, which ``explain`` now says) and its *minimum* sits in the patch.
Both seeds are tested, with the methods that do not depend on that sign (gradcam_elementwise, LeGrad,
FullGrad), which point at the patch on both.
"""

from __future__ import annotations

import pytest
import torch

import camlens
from camlens.synthetic import TinyCNN, TinyViT, patch_dataset, peak_in_box_rate, train

CHANCE = (8 * 8) / (32 * 32)


@pytest.fixture(scope="module")
def data():
    return patch_dataset(1500, seed=0), patch_dataset(200, seed=1)


def hit_rate(model, images, boxes, layer=None):
    result = camlens.explain(model, images, ["gradcam"], target_layer=layer)
    return result.target_layer, peak_in_box_rate(result["gradcam"], boxes)


@pytest.fixture(scope="module")
def vits(data):
    train_set, _ = data
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = TinyViT()
        assert train(model, train_set, steps=250, seed=seed) >= 0.95
        models.append(model)
    return models


@pytest.mark.slow
def test_tiny_vit_automatic_layer_points_at_the_evidence(data, vits):
    _, test_set = data
    model = vits[0]
    layer, auto = hit_rate(model, test_set.images, test_set.boxes)
    assert layer == "blocks.2.norm1"  # the FAQ's expert layer, found by the rule
    _, expert = hit_rate(model, test_set.images, test_set.boxes, model.blocks[-1].norm1)
    assert auto >= 2 * CHANCE
    assert auto == expert  # the same layer, so the same maps: "at least as often" holds with equality


@pytest.mark.slow
def test_tiny_vit_gradcam_with_the_opposite_sign_is_said_and_sign_free_methods_point_at_the_evidence(data, vits):
    """Seed 1: the same layer, Grad-CAM's peak almost never in the patch, its signed map negative everywhere
    on many images (each named in the warning) with the minimum in the patch; the methods that need no sign
    convention at a token layer find the patch on both seeds."""
    _, test_set = data
    images, boxes = test_set.images, test_set.boxes
    with pytest.warns(UserWarning, match=r"gradcam: the map at layer 'blocks.2.norm1' is zero everywhere"):
        result = camlens.explain(vits[1], images, ["gradcam"])
    assert result.target_layer == "blocks.2.norm1"
    assert peak_in_box_rate(result["gradcam"], boxes) < CHANCE
    signed = result.raw["gradcam"]
    negative = signed.flatten(1).amax(dim=1) <= 0
    assert negative.float().mean() >= 0.25
    listed = [note for note in result.warnings if "zero everywhere" in note]
    assert len(listed) == 1 and str(negative.nonzero().flatten().tolist()[:10])[:-1] in listed[0]
    lowest = torch.nn.functional.interpolate(-signed[:, None], size=images.shape[-2:], mode="bilinear")[:, 0]
    assert peak_in_box_rate(lowest, boxes) >= 6 * CHANCE  # the evidence is there, with the opposite sign
    for model in vits:
        result = camlens.explain(model, images, ["gradcam_elementwise", "legrad", "fullgrad"])
        for method in ("gradcam_elementwise", "legrad", "fullgrad"):
            assert peak_in_box_rate(result[method], boxes) >= 6 * CHANCE, method


@pytest.fixture(scope="module")
def cnn_rates(data):
    train_set, test_set = data
    torch.manual_seed(0)
    model = TinyCNN()  # one max-pool: a local receptive field, so the colour evidence stays at the patch
    assert train(model, train_set, steps=250) >= 0.95
    layer, auto = hit_rate(model, test_set.images, test_set.boxes)
    _, authors = hit_rate(model, test_set.images, test_set.boxes, "features.9")  # the last conv's ReLU
    _, expert = hit_rate(model, test_set.images, test_set.boxes, "features.7")
    return layer, auto, authors, expert


@pytest.mark.slow
def test_tiny_cnn_automatic_layer_points_at_the_evidence(cnn_rates):
    layer, auto, authors, _ = cnn_rates
    assert layer == "features"  # its output is the last convolution's rectified output
    assert auto >= 4 * CHANCE
    assert auto == authors  # the container's output is its last ReLU's: the authors' layer itself


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="measured: the automatic layer (the last conv's ReLU output: the Grad-CAM authors' and pytorch-grad-cam's "
    "choice) peaks in the patch on 56% of these test images, the last convolution before its batch norm and ReLU "
    "on 61.5%. Over 5 training seeds on 500 test images (benchmarks/synthetic_meaning.py): 60.2% against 66.6% "
    "on average, behind on 5 seeds of 5 (after the ReLU, Grad-CAM loses the negative evidence). Kept visible",
)
def test_tiny_cnn_automatic_layer_at_least_as_good_as_the_last_convolution(cnn_rates):
    _, auto, _, expert = cnn_rates
    assert auto >= expert
