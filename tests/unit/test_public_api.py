"""The public path from files to pictures: load_network -> preprocess -> explain -> overlay / save / show."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import camlens
from helpers import EXAMPLES


@pytest.fixture(scope="module")
def net():
    return camlens.load_network()


def test_preprocess_takes_paths_pil_images_and_arrays_alike(net):
    path = EXAMPLES / "cat.jpg"
    pil = Image.open(path)
    array = np.asarray(pil.convert("RGB"))
    from_path = net.preprocess(str(path))
    assert from_path.shape == (1, 3, 224, 224)
    torch.testing.assert_close(net.preprocess(pil), from_path, rtol=0, atol=0)
    torch.testing.assert_close(net.preprocess([array]), from_path, rtol=0, atol=0)
    torch.testing.assert_close(net.preprocess(array.astype(np.float32) / 255.0), from_path, atol=1e-6, rtol=0)
    with pytest.raises(TypeError, match="a path, a PIL image or an array"):
        net.preprocess(3)


def test_overlay_save_and_show_from_a_photo(net, tmp_path):
    images = [str(EXAMPLES / "cat.jpg"), str(EXAMPLES / "two_cats.jpg")]
    result = camlens.explain(net.model, net.preprocess(images), ["gradcam", "guided_backprop"])
    assert result.classes.tolist() == [285, 285]
    overlays = result.overlay(images)
    sizes = [Image.open(p).size for p in images]
    assert [o.shape for o in overlays] == [(h, w, 3) for w, h in sizes]
    # the overlay is the image blended half and half with the colourised upsampled map
    from camlens.render import maps_at_size
    from camlens.viz.annotate import colorize

    rgb = np.asarray(Image.open(images[0]).convert("RGB"))
    heat = colorize(maps_at_size(result, 0, ["gradcam"], rgb.shape[:2])["gradcam"].numpy())
    expected = np.clip(0.5 * rgb.astype(np.float32) + 0.5 * heat + 0.5, 0, 255).astype(np.uint8)
    assert np.abs(overlays[0].astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="no \\(B, H, W\\) map named 'guided_backprop'"):
        result.overlay(images, method="guided_backprop")
    written = result.save(tmp_path / "pics", images, network=net.name, labels=net.labels)
    assert sorted(p.name for p in written) == sorted(
        f"{stem}-efficientnet_lite0-{s}.jpg" for stem in ("cat", "two_cats") for s in ("heatmap", "cam", "gb")
    )
    annotated = Image.open(tmp_path / "pics" / "cat-efficientnet_lite0-cam.jpg")
    assert annotated.width == sizes[0][0] and annotated.height > sizes[0][1]
    figure = camlens.show(result, images)
    assert len(figure.axes) == 2 * 3


def test_public_names_are_exported():
    for name in ("load_network", "Network", "read_image", "show", "explain", "available_methods"):
        assert name in camlens.__all__ and getattr(camlens, name) is not None
