"""Meaning without pretrained weights: tiny models trained here on the coloured-patch task
(:mod:`camlens.synthetic`: the class is the colour of an 8 x 8 patch at a random place in a 32 x 32
grey texture, with a grey distractor) must have their automatic layer's Grad-CAM peak inside the
patch far above chance (the patch's share of the image, 6.25%) and at least as often as at a
hand-picked expert layer.

Expert layers: for the ViT, pytorch-grad-cam's FAQ choice (the last block's ``norm1``), which the
automatic rule must find by itself; for the CNN, the last convolution (before its batch norm and ReLU),
the usual hand choice.

Measured with this configuration (train 1500, 250 steps, test 200): ViT 100% accurate, peak in the
patch for 19.5% of the test images at the automatic layer (= the FAQ layer; the penultimate block's
output: 20.0%), i.e. about 3x chance -- lower than the 39-70% noted in METHODS.md for a similar ViT.
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


@pytest.mark.slow
def test_tiny_vit_automatic_layer_points_at_the_evidence(data):
    train_set, test_set = data
    torch.manual_seed(0)
    model = TinyViT()
    assert train(model, train_set, steps=250) >= 0.95
    layer, auto = hit_rate(model, test_set.images, test_set.boxes)
    assert layer == "blocks.2.norm1"  # the FAQ's expert layer, found by the rule
    _, expert = hit_rate(model, test_set.images, test_set.boxes, model.blocks[-1].norm1)
    assert auto >= 2 * CHANCE
    assert auto >= expert


@pytest.fixture(scope="module")
def cnn_rates(data):
    train_set, test_set = data
    torch.manual_seed(0)
    model = TinyCNN()  # one max-pool: a local receptive field, so the colour evidence stays at the patch
    assert train(model, train_set, steps=250) >= 0.95
    layer, auto = hit_rate(model, test_set.images, test_set.boxes)
    _, expert = hit_rate(model, test_set.images, test_set.boxes, "features.7")
    return layer, auto, expert


@pytest.mark.slow
def test_tiny_cnn_automatic_layer_points_at_the_evidence(cnn_rates):
    layer, auto, _ = cnn_rates
    assert layer == "features"
    assert auto >= 4 * CHANCE


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="measured: the automatic layer (the last block's ReLU output, = pytorch-grad-cam's features[-1]) "
    "peaks in the patch on 56% of the test images, the last convolution before its batch norm and ReLU on "
    "61.5%. On 2000 test images and three training seeds: 57.8 / 64.8 / 73.3% against 64.4 / 62.8 / 78.5%: "
    "behind on two seeds of three (Grad-CAM after the ReLU loses the negative evidence). Kept visible",
)
def test_tiny_cnn_automatic_layer_at_least_as_good_as_the_last_convolution(cnn_rates):
    _, auto, expert = cnn_rates
    assert auto >= expert
