"""The bundled EfficientNet-Lite1 and Lite2: their packages' ImageNet weights, offline, at 240 / 260 px,
built without timm and checked against timm's tf_efficientnet_lite1/2 (the oracle)."""

from __future__ import annotations

import pytest
import torch

import camlens
from camlens.layers import default_layer
from camlens.zoo import load_network
from camlens.zoo.lite0 import bundled_weights_path
from camlens.zoo.registry import BUNDLED_NETWORKS, available_offline, list_networks

CATS = range(281, 288)  # ImageNet's domestic cats (tabby ... Egyptian cat)
SIDES = {"efficientnet_lite1": 240, "efficientnet_lite2": 260}


@pytest.fixture(scope="module", params=sorted(SIDES))
def network(request):
    return load_network(request.param, offline=True)


def test_loads_offline_at_its_resolution_with_lite0s_normalisation(network):
    lite0 = load_network("efficientnet_lite0", offline=True)
    side = SIDES[network.name]
    assert network.input_size == (side, side)
    assert (network.mean, network.std) == (lite0.mean, lite0.std)
    assert network.weights == f"bundled ({BUNDLED_NETWORKS[network.name]})"
    assert len(network.labels) == 1000 and network.labels == lite0.labels
    assert network.preprocess("examples/cat.jpg").shape == (1, 3, side, side)


def test_predicts_a_cat_with_imagenet_confidence(network):
    with torch.no_grad():
        probabilities = network.model(network.preprocess("examples/cat.jpg")).softmax(1)[0]
    top = probabilities.topk(3)
    assert int(top.indices[0]) in CATS, top
    # random weights give ~1/1000 per class; these give the cat half the mass or more (0.57 / 0.63 measured)
    assert float(top.values[0]) > 0.4, top
    assert set(top.indices.tolist()) <= set(CATS)


@pytest.mark.slow
def test_logits_and_layer_names_are_timms(network):
    timm = pytest.importorskip("timm")
    reference = timm.create_model(f"tf_{network.name}", pretrained=False).eval()
    shipped = torch.load(bundled_weights_path(network.name), map_location="cpu", weights_only=True)
    reference.load_state_dict(dict(zip(reference.state_dict(), shipped.values(), strict=True)))
    assert [n for n, _ in network.model.named_modules()] == [n for n, _ in reference.named_modules()]
    x = network.preprocess("examples/cat.jpg")
    with torch.no_grad():
        assert torch.equal(network.model(x), reference(x))
    assert sum(p.numel() for p in network.model.parameters()) == sum(p.numel() for p in reference.parameters())


@pytest.mark.slow
def test_automatic_layer_and_gradcam(network):
    x = network.preprocess("examples/cat.jpg")
    assert default_layer(network.model, x)[0] == "bn2"
    result = camlens.explain(network.model, x, ["gradcam"])
    assert result.target_layer == "bn2"
    cam = result["gradcam"]
    assert cam.shape[0] == 1 and torch.isfinite(cam).all() and float(cam.max()) > float(cam.min())


def test_listed_as_bundled_and_by_timm_name():
    offline = dict(available_offline())
    names = list_networks()
    for name, package in BUNDLED_NETWORKS.items():
        assert offline[name] == f"bundled ({package})" and name in names
    assert load_network("tf_efficientnet_lite1", offline=True).name == "efficientnet_lite1"
