"""The command line through its real entry point, in a subprocess, offline, on the bundled model."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

from camlens.run import load_maps
from helpers import EXAMPLES

SIX = ["heatmap", "cam", "heatmap++", "cam++", "gb", "cam_gb"]
CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_main_job_predicts_a_cat_and_writes_the_six_pictures(run, tmp_path):
    result = run("explain", str(EXAMPLES / "cat.jpg"), "--output-dir", str(tmp_path / "out"), "--save-maps")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    top1 = next(line for line in lines if line.strip().startswith("1."))
    top1_class = int(top1.rsplit("(class ", 1)[1].rstrip(")"))
    assert top1_class in CAT_CLASSES, result.stdout
    assert "layer bn2" in result.stdout
    original = Image.open(EXAMPLES / "cat.jpg").size
    for suffix in SIX:
        picture = tmp_path / "out" / f"cat-efficientnet_lite0-{suffix}.jpg"
        assert picture.is_file(), suffix
        assert Image.open(picture).size == original
    path = tmp_path / "out" / "cat-efficientnet_lite0-maps.npz"
    maps = load_maps(path)["cat"]
    h, w = original[1], original[0]
    for name in ("gradcam", "gradcam++"):
        assert maps[name].shape == (h, w) and maps[name].dtype == np.float32
        assert maps[name].min() >= 0 and maps[name].max() <= 1 and maps[name].max() == 1
    for name in ("guided_backprop", "guided_gradcam"):
        assert maps[name].shape == (h, w, 3) and maps[name].dtype == np.float32
    with np.load(path) as stored:  # compact: the CAMs at bn2's 7 x 7, guided backprop at the 224 px input
        assert int(stored["class_id"]) == top1_class
        assert np.isfinite(stored["score"])
        assert stored["cam/gradcam"].shape == (7, 7) and stored["input/guided_backprop"].shape == (3, 224, 224)
        assert tuple(stored["photo_size"]) == (h, w)


def _mass_left(path) -> float:
    (cam,) = (maps["gradcam"] for maps in load_maps(path).values())
    return float(cam[:, : cam.shape[1] // 2].sum() / cam.sum())


@pytest.mark.slow
def test_each_class_of_a_two_object_composite_lights_its_own_object(run, tmp_path):
    """cat | coffee cup side by side: Egyptian cat's Grad-CAM on the left, espresso's on the right."""
    image = str(EXAMPLES / "cat_and_cup.jpg")
    shares = {}
    for class_id in (285, 967):
        out = tmp_path / str(class_id)
        result = run("explain", image, "--class-id", str(class_id), "--save-maps", "--output-dir", str(out))
        assert result.returncode == 0, result.stderr
        shares[class_id] = _mass_left(out / "cat_and_cup-efficientnet_lite0-maps.npz")
    assert shares[285] > 0.5, shares
    assert shares[967] < 0.5, shares


@pytest.mark.slow
def test_seed_flags_several_images_and_a_folder(run, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        Image.open(EXAMPLES / "cat.jpg").save(folder / name)
    result = run(
        "explain",
        "--image-path",
        str(EXAMPLES / "two_cats.jpg"),
        str(folder),
        "--output-dir",
        str(tmp_path / "out"),
        "--methods",
        "gradcam",
        "guided_backprop",
        "--topk",
        "2",
        "--batch-size",
        "2",
    )
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(
        [f"{stem}-efficientnet_lite0-{s}.jpg" for stem in ("a", "b", "two_cats") for s in ("heatmap", "cam", "gb")]
        + ["results.csv", "results.jsonl"]
        + (["results.parquet"] if importlib.util.find_spec("pyarrow") else [])
    )
    assert result.stdout.count(" 2. ") == 3 and " 3. " not in result.stdout


def test_user_model_file_with_labels(run, tmp_path):
    result = run(
        "explain",
        str(EXAMPLES / "cat.jpg"),
        "--model",
        f"{EXAMPLES / 'cifar_net.py'}:net",
        "--input-size",
        "32",
        "--mean",
        "0.5",
        "0.5",
        "0.5",
        "--std",
        "0.5",
        "0.5",
        "0.5",
        "--labels",
        str(EXAMPLES / "cifar10_labels.txt"),
        "--output-dir",
        str(tmp_path / "out"),
    )
    assert result.returncode == 0, result.stderr
    assert "layer relu2" in result.stdout
    labels = (EXAMPLES / "cifar10_labels.txt").read_text().split()
    assert any(label in result.stdout for label in labels)
    assert len(list((tmp_path / "out").glob("cat-cifar_net-net-*.jpg"))) == 6


def _unusual_images(folder):
    rng = np.random.default_rng(0)
    cat = Image.open(EXAMPLES / "cat.jpg")
    cat.convert("L").save(folder / "gray.png")
    rgba = cat.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "rgba.png")
    cat.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray((rng.random((40, 60)) * 65535).astype(np.uint16)).save(folder / "sixteen.png")
    cat.convert("CMYK").save(folder / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    cat.save(folder / "rotated.jpg", exif=exif.tobytes())
    Image.fromarray(rng.integers(0, 255, (2, 3, 3), dtype=np.uint8)).save(folder / "tiny.png")
    Image.fromarray(rng.integers(0, 255, (30, 2400, 3), dtype=np.uint8)).save(folder / "wide.png")
    cat.resize((4000, 2700)).save(folder / "large.jpg")


@pytest.mark.slow
def test_valid_but_unusual_images_are_explained(run, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    _unusual_images(folder)
    result = run("explain", str(folder), "--output-dir", str(tmp_path / "out"), "--methods", "gradcam")
    assert result.returncode == 0, result.stderr
    cat_size = Image.open(EXAMPLES / "cat.jpg").size
    expected = {
        "gray": cat_size,
        "rgba": cat_size,
        "palette": cat_size,
        "sixteen": (60, 40),
        "cmyk": cat_size,
        "rotated": (cat_size[1], cat_size[0]),
        "tiny": (3, 2),
        "wide": (2400, 30),
        "large": (4000, 2700),
    }
    for stem, size in expected.items():
        heat = Image.open(tmp_path / "out" / f"{stem}-efficientnet_lite0-heatmap.jpg")
        assert heat.size == size, stem


CHANNELS_LAST_NET = '''
import torch
from torch import nn


class Last(nn.Module):
    """A stem, then a channels-last stage (B, H, W, C) as in ConvNeXt and Swin, pooled and classified."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 4, stride=4)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.norm(self.stem(x).permute(0, 2, 3, 1)).mean(dim=(1, 2)))


def net():
    torch.manual_seed(0)
    return Last()
'''


@pytest.mark.slow
def test_layout_flag_states_the_target_layers_layout_and_a_wrong_one_is_a_one_line_error(run, tmp_path):
    (tmp_path / "last.py").write_text(CHANNELS_LAST_NET)
    common = [str(EXAMPLES / "cat.jpg"), "--model", f"{tmp_path / 'last.py'}:net", "--input-size", "32",
              "--layer-name", "norm", "--methods", "gradcam"]  # fmt: skip
    result = run("explain", *common, "--layout", "nhwc", "--output-dir", str(tmp_path / "ok"))
    assert result.returncode == 0, result.stderr
    assert "layout: nhwc (1, 8, 8, 16)" in result.stdout, result.stdout
    result = run("explain", *common, "--layout", "tokens", "--output-dir", str(tmp_path / "bad"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = [line for line in result.stderr.splitlines() if line.startswith("camlens: error")]
    assert len(message) == 1 and "layout='tokens' needs a 3-D layer output" in message[0] and "--layout" in message[0]
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


BRIGHTNESS_NET = '''
import torch
from torch import nn


def net():
    """Class 0's evidence is brightness above 0.5: Grad-CAM = ReLU(mean(rgb) - 0.5), zero on a dark image."""
    model = nn.Sequential(nn.Conv2d(3, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2))
    with torch.no_grad():
        model[0].weight.fill_(1 / 3)
        model[0].bias.fill_(-0.5)
        model[3].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model[3].bias.zero_()
    return model
'''


def test_a_map_zero_everywhere_is_noted_on_its_own_image_only(run, tmp_path):
    (tmp_path / "bright.py").write_text(BRIGHTNESS_NET)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(200, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "light.png")
    Image.fromarray(rng.integers(0, 60, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "dark.png")
    result = run("explain", str(tmp_path / "light.png"), str(tmp_path / "dark.png"), "--model",
                 f"{tmp_path / 'bright.py'}:net", "--input-size", "16", "--mean", "0", "0", "0", "--std", "1", "1",
                 "1", "--class-id", "0", "--methods", "gradcam", "--output-dir", str(tmp_path / "out"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    light, dark = result.stdout.split("dark.png")[0].split("light.png")[1], result.stdout.split("dark.png")[1]
    assert "zero everywhere" not in light
    assert "note: gradcam: the map at layer '0' is zero everywhere for this image" in dark
    assert "image(s)" not in result.stdout
