"""The bundled EfficientNet-Lite0, defined without timm, against timm's tf_efficientnet_lite0 (the oracle)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from camlens.errors import UsageError
from camlens.layers import default_layer
from camlens.zoo import load_network
from camlens.zoo.lite0 import EfficientNetLite0, bundled_weights_path, load_lite0


@pytest.fixture(scope="module")
def ours():
    return load_lite0().model


@pytest.fixture(scope="module")
def timm_reference():
    """timm's model with the shipped weights mapped by position, as camlens built it before (independent of ours)."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    shipped = torch.load(bundled_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(dict(zip(model.state_dict(), shipped.values(), strict=True)))
    return model


def _cat(size: int = 224) -> torch.Tensor:
    rgb = np.asarray(Image.open("examples/cat.jpg").convert("RGB").resize((size, size)), dtype=np.float32) / 255
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return torch.from_numpy(((rgb - mean) / std).astype(np.float32)).permute(2, 0, 1)[None]


def test_logits_are_timms_bit_for_bit(ours, timm_reference):
    torch.manual_seed(0)
    # a real photo, a batch, and odd sizes where TensorFlow's SAME padding is asymmetric
    inputs = [_cat(), torch.randn(2, 3, 129, 97), torch.randn(1, 3, 96, 161)]
    with torch.no_grad():
        for x in inputs:
            assert torch.equal(ours(x), timm_reference(x)), tuple(x.shape)
    with torch.no_grad():
        assert ours(inputs[0]).argmax().item() == 285  # Egyptian cat


def test_layer_names_weights_and_default_layer_are_timms(ours, timm_reference):
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in timm_reference.named_modules()]
    reference = timm_reference.state_dict()
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, reference[name]) and tensor.is_contiguous(), name
    x = torch.randn(1, 3, 224, 224)
    assert default_layer(ours, x)[0] == default_layer(timm_reference, x)[0] == "bn2"


def test_gradients_match_timms(ours, timm_reference):
    """The CAM methods differentiate the head: the gradients at the default layer agree too."""
    x = _cat()
    features: list[torch.Tensor] = []
    grads = []
    for model in (ours, timm_reference):
        handle = model.bn2.register_forward_hook(lambda _m, _i, out: features.append(out))
        try:
            logits = model(x)
            (gradient,) = torch.autograd.grad(logits[0, 285], features[-1])
        finally:
            handle.remove()
        grads.append(gradient)
    assert torch.equal(grads[0], grads[1])


def test_weight_file_in_timms_names_and_dtype(tmp_path, ours):
    state = {k: v.half() if v.is_floating_point() else v for k, v in ours.state_dict().items()}
    torch.save(state, tmp_path / "half.pth")
    network = load_network("efficientnet_lite0", str(tmp_path / "half.pth"))
    loaded = network.model.state_dict()
    assert all(v.dtype == ours.state_dict()[k].dtype and v.is_contiguous() for k, v in loaded.items())
    assert torch.equal(loaded["classifier.weight"], state["classifier.weight"].float())
    assert network.weights == str(tmp_path / "half.pth")
    torch.save({"conv_stem.weight": torch.zeros(32, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(UsageError, match="do not fit efficientnet_lite0: keys 295 missing"):
        load_network("efficientnet_lite0", str(tmp_path / "partial.pth"))


def test_random_model_is_built_on_any_device():
    with torch.device("meta"):
        model = EfficientNetLite0(num_classes=10)
    assert all(p.is_meta for p in model.parameters()) and model.classifier.out_features == 10
    model = EfficientNetLite0(num_classes=10).eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_bundled_model_imports_neither_timm_nor_torchvision_and_reads_weights_once():
    code = (
        "import sys, torch\n"
        "calls = []\n"
        "load = torch.load\n"
        "torch.load = lambda *a, **k: calls.append(a) or load(*a, **k)\n"
        "from camlens.zoo import load_network\n"
        "network = load_network()\n"
        "print(len(calls), 'timm' in sys.modules, 'torchvision' in sys.modules, network.weights)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:3] == ["1", "False", "False"], out
    assert out[3] == "bundled"
