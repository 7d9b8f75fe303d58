"""Networks by name, weight files in their usual shapes, and the one-line errors."""

from __future__ import annotations

import pytest
import torch
import torchvision

from camlens.errors import UsageError
from camlens.zoo import imagenet_labels, list_networks, load_network, read_state_dict


@pytest.fixture(scope="module")
def resnet18_state():
    torch.manual_seed(0)
    return torchvision.models.resnet18().state_dict()


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model", "dataparallel"])
def test_weight_file_layouts(tmp_path, resnet18_state, layout):
    content = {
        "plain": resnet18_state,
        "state_dict": {"state_dict": resnet18_state, "epoch": 3},
        "model": {"model": resnet18_state},
        "dataparallel": {f"module.{k}": v for k, v in resnet18_state.items()},
    }[layout]
    path = tmp_path / "w.pth"
    torch.save(content, path)
    network = load_network("resnet18", str(path), offline=True)
    loaded = network.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in resnet18_state.items())
    assert network.input_size == (224, 224) and len(network.labels) == 1000
    assert network.weights == str(path)


def test_inception_is_built_like_torchvision_builds_it(tmp_path):
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    path = tmp_path / "inception.pth"
    torch.save(model.state_dict(), path)
    network = load_network("inception", str(path), offline=True)  # the seeds' short name
    assert network.name == "inception_v3" and network.input_size == (299, 299)
    assert network.model.transform_input  # as torchvision's pretrained builder sets it
    assert not network.model.training


def test_torch_cache_is_used(tmp_path, monkeypatch, resnet18_state):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(resnet18_state, tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1])
    network = load_network("resnet18", offline=True)
    assert "checkpoints" in network.weights


def test_errors_name_the_problem(tmp_path, resnet18_state):
    with pytest.raises(UsageError, match=r"unknown network 'resnet181'; closest: resnet18"):
        load_network("resnet181", offline=True)
    junk = tmp_path / "junk.pth"
    junk.write_text("not weights")
    with pytest.raises(UsageError, match="is not a PyTorch weight file"):
        read_state_dict(junk)
    with pytest.raises(UsageError, match="does not exist"):
        read_state_dict(tmp_path / "absent.pth")
    torch.save({"fc.weight": torch.zeros(10, 512)}, tmp_path / "partial.pth")
    with pytest.raises(
        UsageError, match=r"do not fit resnet18: keys 1 of another shape \(fc.weight \(10, 512\) vs \(1000, 512\)\)"
    ):
        load_network("resnet18", str(tmp_path / "partial.pth"), offline=True)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(UsageError, match="no state dict"):
        read_state_dict(tmp_path / "list.pth")


def test_timm_model_by_name(tmp_path):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False)
    torch.save(model.state_dict(), tmp_path / "r10t.pth")
    network = load_network("resnet10t", str(tmp_path / "r10t.pth"), offline=True)
    assert torch.equal(network.model.state_dict()["fc.weight"], model.state_dict()["fc.weight"])
    with pytest.raises(UsageError, match="no weights for timm model resnet10t"):
        load_network("timm:resnet10t", offline=True)


def test_bundled_model_and_names():
    network = load_network()
    assert network.name == "efficientnet_lite0" and network.weights.startswith("bundled")
    assert network.label(285) == "Egyptian cat" == imagenet_labels()[285]
    names = list_networks()
    for seed in (
        "alexnet",
        "vgg16",
        "vgg19",
        "resnet18",
        "resnet50",
        "resnet101",
        "densenet121",
        "inception_v3",
        "mobilenet_v2",
        "shufflenet_v2_x1_0",
        "squeezenet1_1",
        "efficientnet_lite0",
    ):
        assert seed in names


def test_image_size_limit_is_ours_not_pillows(tmp_path):
    import numpy as np
    from PIL import Image

    from camlens.images import read_image

    # 100 megapixels: over Pillow's warning threshold, under camlens' limit -> read, not "damaged"
    Image.new("L", (12_500, 8_000)).save(tmp_path / "big.png")
    rgb = read_image(tmp_path / "big.png")
    assert rgb.shape == (2_621, 4_096, 3) and rgb.dtype == np.uint8  # decoded, then fit to max_side=4096
    Image.new("1", (20_000, 10_000)).save(tmp_path / "huge.png")  # 200 megapixels
    with pytest.raises(UsageError, match="too large"):
        read_image(tmp_path / "huge.png")
