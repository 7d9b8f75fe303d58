"""Reading images of any channel count (camlens.images.read_pixels / display_rgb) and the channel count of a
model (camlens.zoo.network.input_channels): closed forms on hand-made files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from torch import nn

from camlens.errors import UsageError
from camlens.images import display_rgb, read_image, read_pixels, to_batch
from camlens.zoo.network import input_channels


def test_input_channels_is_the_first_convolutions():
    assert input_channels(nn.Sequential(nn.Conv2d(5, 4, 1), nn.Conv2d(4, 3, 1))) == 5
    assert input_channels(nn.Sequential(nn.Conv3d(1, 4, 1))) == 1
    assert input_channels(nn.Sequential(nn.Flatten(), nn.Linear(12, 3))) == 3  # none: the default
    import torchvision

    assert input_channels(torchvision.models.vit_b_16(image_size=32, num_classes=2)) == 3  # the patch embedding


def test_a_16_bit_grey_image_keeps_its_depth_and_is_scaled_to_unit_range(tmp_path):
    values = np.array([[0, 1000, 65535], [30000, 40000, 50000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    pixels = read_pixels(tmp_path / "deep.png", 1)
    assert pixels.dtype == np.uint16 and pixels.shape == (2, 3, 1)
    np.testing.assert_array_equal(pixels[..., 0], values)
    batch = to_batch([pixels], (2, 3), (0.0,), (1.0,))
    np.testing.assert_allclose(batch[0, 0].numpy(), values / 65535.0, rtol=1e-6)
    rgb = display_rgb(pixels)  # stretched from the 2nd to the 98th percentile, grey
    low, high = np.percentile(values.astype(np.float32) / 65535.0, (2, 98))
    expected = (np.clip((values / 65535.0 - low) / (high - low), 0, 1) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(rgb[..., 0], expected)
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_rgba_bands_are_read_as_stored_and_a_large_array_is_scaled_down(tmp_path):
    Image.new("RGBA", (4, 3), (10, 20, 30, 0)).save(tmp_path / "a.png")  # fully transparent: no compositing
    assert read_pixels(tmp_path / "a.png", 4)[0, 0].tolist() == [10, 20, 30, 0]
    np.save(tmp_path / "big.npy", np.full((100, 50, 6), 7, dtype=np.uint8))
    small = read_pixels(tmp_path / "big.npy", 6, max_side=20)
    assert small.shape == (20, 10, 6) and small.dtype == np.uint8 and (small == 7).all()
    assert read_image(tmp_path / "big.npy", max_side=20).shape == (20, 10, 3)  # its first three bands


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 3, 4, 5)), "is an array of shape (2, 3, 4, 5), not H x W x C"),
        (np.array([[np.nan, 0.0]]), "holds NaN or infinite values"),
        (np.zeros((5, 5, 2)), "neither H x W x 4 nor 4 x H x W"),
        (np.zeros((3, 3), dtype=bool), "holds bool values, not numbers"),
    ],
)
def test_bad_arrays_are_one_line_naming_the_file(tmp_path, array, message):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(UsageError, match="x.npy") as error:
        read_pixels(tmp_path / "x.npy", 4 if array.ndim == 3 and array.shape[2] == 2 else None)
    assert message in str(error.value)


def test_not_an_array_and_missing_files(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"not numpy")
    with pytest.raises(UsageError, match="not a readable .npy array"):
        read_pixels(tmp_path / "x.npy", 1)
    with pytest.raises(UsageError, match="does not exist"):
        read_pixels(tmp_path / "none.png", 1)
    Image.new("RGB", (4, 4)).save(tmp_path / "c.png")
    with pytest.raises(UsageError, match=r"has 3 bands \(RGB, 1 page\); the network takes 5 channels"):
        read_pixels(tmp_path / "c.png", 5)
