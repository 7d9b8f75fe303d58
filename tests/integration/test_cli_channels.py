"""Any channel count through the command line: a 1-channel (grey) and a 4-band model, read from grey PNGs, a
4-page TIFF and .npy arrays, one mean and std per channel, a non-square --input-size. Oracle: the input built
here by hand (Pillow / numpy, torch's resize) gives the scores and maps the run wrote (camlens.explain on it)."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import camlens
from camlens.cli.main import main
from camlens.pipeline.maps import load_maps
from camlens.render import maps_at_size

FACTORIES = textwrap.dedent(
    """
    import torch
    from torch import nn

    def _net(channels):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

    def grey():
        return _net(1)

    def bands():
        return _net(4)
    """
)


def _net(channels):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 3),
    ).eval()  # fmt: skip


def _input(array, size, mean, std):
    """The model input by hand: H x W x C in [0, 1] -> (1, C, h, w), antialiased bilinear, normalised."""
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)[None]
    antialias = t.shape[-2] > size[0] or t.shape[-1] > size[1]
    t = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=antialias)
    return (t - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def _rows(out):
    return {row["stem"]: row for row in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "models.py").write_text(FACTORIES, encoding="utf-8")
    grey = tmp_path / "grey"
    grey.mkdir()
    Image.fromarray((rng.random((40, 60)) * 255).astype(np.uint8)).save(grey / "g.png")
    Image.fromarray((rng.random((36, 50, 3)) * 255).astype(np.uint8)).save(grey / "colour.png")  # read as grey
    Image.fromarray((rng.random((30, 44)) * 65535).astype(np.uint16)).save(grey / "deep.png")  # 16-bit
    bands = tmp_path / "bands"
    bands.mkdir()
    np.save(bands / "hwc.npy", rng.random((40, 52, 4)).astype(np.float32))
    np.save(bands / "chw.npy", rng.random((4, 28, 30)).astype(np.float32))
    pages = [Image.fromarray((rng.random((24, 32)) * 255).astype(np.uint8)) for _ in range(4)]
    pages[0].save(bands / "pages.tif", save_all=True, append_images=pages[1:])
    Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)).save(bands / "rgb.png")  # 3 bands: a failed row
    return tmp_path


def test_a_grey_model_reads_grey_images_at_a_non_square_size(folder):
    out = folder / "out"
    code = main(["explain", str(folder / "grey"), "--model", f"{folder}/models.py:grey", "--input-size", "32", "48",
                 "--methods", "gradcam", "guided_backprop", "--save-maps", "--format", "png",
                 "--output-dir", str(out)])  # fmt: skip
    assert code == 0
    rows = _rows(out)
    model = _net(1)
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    for stem in ("g", "colour", "deep"):
        image = Image.open(folder / "grey" / f"{stem}.png")
        if image.mode.startswith("I"):
            array = np.asarray(image, dtype=np.float32)[..., None] / 65535.0
        else:
            array = np.asarray(image.convert("L"), dtype=np.float32)[..., None] / 255.0
        x = _input(array, (32, 48), (0.0,), (1.0,))  # channels other than 3: pixels in [0, 1] by default
        result = camlens.explain(model, x, ["gradcam", "guided_backprop"])
        assert seen[-1] == (1, 1, 32, 48)
        assert rows[stem]["score"] == pytest.approx(float(result.scores[0]), abs=2e-6)
        saved = load_maps(out / f"{stem}-models-grey-maps.npz")[stem]
        expected = maps_at_size(result, 0, ["gradcam", "guided_backprop"], array.shape[:2])
        np.testing.assert_allclose(saved["gradcam"], expected["gradcam"].numpy(), atol=1e-5)
        assert saved["guided_backprop"].shape == (*array.shape[:2], 1)
        np.testing.assert_allclose(saved["guided_backprop"][..., 0], expected["guided_backprop"][0].numpy(),
                                   rtol=1e-4, atol=1e-6)  # fmt: skip
        picture = np.asarray(Image.open(out / f"{stem}-models-grey-gb.png"))
        assert picture.shape == (*array.shape[:2], 3)  # drawn grey, as RGB
        assert (picture[..., 0] == picture[..., 1]).all() and (picture[..., 1] == picture[..., 2]).all()


def test_a_four_band_model_takes_npy_arrays_and_tiff_pages_with_a_mean_and_std_per_band(folder):
    out = folder / "out"
    mean, std = (0.1, 0.2, 0.3, 0.4), (0.5, 0.25, 0.5, 0.25)
    code = main(["explain", str(folder / "bands"), "--model", f"{folder}/models.py:bands", "--input-size", "24",
                 "--mean", *map(str, mean), "--std", *map(str, std), "--bands", "3", "2", "1", "--methods", "gradcam",
                 "--save-maps", "--output-dir", str(out)])  # fmt: skip
    assert code == 2  # rgb.png has 3 bands: its row fails, the others are done
    rows = _rows(out)
    assert rows["rgb"]["status"] == "error"
    assert "3 bands" in rows["rgb"]["error"] and "4 channels" in rows["rgb"]["error"]
    model = _net(4)
    arrays = {
        "hwc": np.load(folder / "bands" / "hwc.npy"),
        "chw": np.moveaxis(np.load(folder / "bands" / "chw.npy"), 0, -1),
    }
    tiff = Image.open(folder / "bands" / "pages.tif")
    planes = []
    for page in range(4):
        tiff.seek(page)
        planes.append(np.asarray(tiff, dtype=np.float32) / 255.0)
    arrays["pages"] = np.stack(planes, axis=-1)
    for stem, array in arrays.items():
        result = camlens.explain(model, _input(array, (24, 24), mean, std), ["gradcam"])
        assert rows[stem]["status"] == "ok"
        assert rows[stem]["score"] == pytest.approx(float(result.scores[0]), abs=2e-6), stem
        saved = load_maps(out / f"{stem}-models-bands-maps.npz")[stem]["gradcam"]
        np.testing.assert_allclose(saved, maps_at_size(result, 0, ["gradcam"], array.shape[:2])["gradcam"].numpy(),
                                   atol=1e-5)  # fmt: skip
    # the pictures are drawn on bands 3, 2, 1 of the image (floats: each stretched from its 2nd to 98th percentile)
    from camlens.images import display_rgb

    shown = display_rgb(arrays["hwc"].astype(np.float32), (3, 2, 1))
    band = arrays["hwc"][..., 3]
    low, high = np.percentile(band, (2, 98))
    stretched = (np.clip((band - low) / (high - low), 0, 1) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(shown[..., 0], stretched)


def test_the_channel_count_comes_from_the_first_convolution_or_from_channels(folder, capsys):
    out = folder / "out"
    # no --channels: the grey model's first convolution takes 1 channel, so a colour PNG is read grey
    assert main(["explain", str(folder / "grey" / "colour.png"), "--model", f"{folder}/models.py:grey",
                 "--input-size", "16", "--methods", "gradcam", "--output-dir", str(out)]) == 0  # fmt: skip
    assert _rows(out)["colour"]["status"] == "ok"
    capsys.readouterr()
    # --channels 3 on the grey model: the images are read RGB, which the model itself refuses, in one line
    assert main(["explain", str(folder / "grey" / "colour.png"), "--model", f"{folder}/models.py:grey",
                 "--channels", "3", "--input-size", "16", "--methods", "gradcam", "--output-dir",
                 str(folder / "out3")]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "expected input[1, 3, 16, 16] to have 1 channels" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mean", "0.5", "0.5"], "--mean has 2 values; models-bands takes 4 channels"),
        (["--std", "1", "1", "1"], "--std has 3 values; models-bands takes 4 channels"),
        (["--bands", "0", "1", "4"], "--bands 0 1 4: give three of the 4 channels"),
        (["--input-size", "16", "16", "16"], "--input-size takes a side or a height and a width"),
        (["--input-size", "4", "16"], "--input-size 4 16 is too small"),
        (["--channels", "0"], "--channels 0: give a count from 1 to 1024"),
    ],
)
def test_bad_channel_options_are_one_line_and_leave_nothing(folder, capsys, extra, message):
    out = folder / "bad"
    code = main(["explain", str(folder / "bands" / "hwc.npy"), "--model", f"{folder}/models.py:bands",
                 "--methods", "gradcam", "--output-dir", str(out), *extra])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("camlens: error")]) == 1
    assert not out.exists()
