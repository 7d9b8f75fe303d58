"""A newcomer's first hour, through the real command: each item of the walkthrough that used to fail."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from camlens.run import load_maps
from helpers import EXAMPLES

PATCH_MODEL = [
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
    str(EXAMPLES / "patch_labels.txt"),
]


@pytest.mark.slow
def test_guided_gradcam_alone_and_with_gradcam(run, tmp_path):
    for methods in (["guided_gradcam"], ["gradcam", "guided_gradcam"]):
        out = tmp_path / "-".join(methods)
        result = run("explain", str(EXAMPLES / "cat.jpg"), "--methods", *methods, "--output-dir", str(out))
        assert result.returncode == 0, result.stderr
        assert (out / "cat-efficientnet_lite0-cam_gb.jpg").is_file()


def test_output_dir_that_cannot_be_created_names_the_dir(run, tmp_path):
    result = run("explain", str(EXAMPLES / "cat.jpg"), "--output-dir", "/proc/nope")
    assert result.returncode == 2, result.stderr
    assert "/proc/nope" in result.stderr and ".camlens" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_annotated_png_pictures_and_overwrite(run, tmp_path):
    out = tmp_path / "out"
    args = ["explain", str(EXAMPLES / "cat.jpg"), "--methods", "gradcam", "--output-dir", str(out)]
    result = run(*args, "--annotate", "--format", "png")
    assert result.returncode == 0, result.stderr
    plain = Image.open(EXAMPLES / "cat.jpg")
    cam = Image.open(out / "cat-efficientnet_lite0-cam.png")
    assert cam.format == "PNG" and cam.width == plain.width and cam.height > plain.height + 20  # caption + bar
    top = np.asarray(cam)[:12]
    assert (top < 128).any() and (top == 255).mean() > 0.5  # dark caption text on a white bar
    # other options would replace those files: refused (exit 2) unless told to overwrite
    again = run(*args, "--format", "png")
    assert again.returncode == 2 and "--overwrite" in again.stderr, again.stderr
    assert Image.open(out / "cat-efficientnet_lite0-cam.png").height == cam.height  # untouched
    assert run(*args, "--format", "png", "--overwrite").returncode == 0
    assert Image.open(out / "cat-efficientnet_lite0-cam.png").height == plain.height  # now the plain picture


@pytest.mark.slow
def test_json_version_and_help(run, tmp_path):
    result = run("explain", str(EXAMPLES / "cat.jpg"), "--json", "--topk", "3", "--output-dir", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.strip().splitlines()
    record = json.loads(line)
    assert record["class_id"] == 285 and record["class_name"] == "Egyptian cat" and record["layer"] == "bn2"
    assert len(record["topk"]) == 3 and len(record["files"]) == 6 and record["score"] > 0
    version = run("--version")
    assert version.returncode == 0 and re.fullmatch(r"camlens \d+\.\d+\.\d+\n", version.stdout)
    text = run("explain", "--help").stdout
    for needle in ("IMAGE", "image files or folders", "--output-dir", "(default: results)", "--batch-size",
                   "(default: 8)"):  # fmt: skip
        assert needle in text, needle


@pytest.mark.slow
def test_stems_that_collide_get_their_folder_name(run, tmp_path):
    for folder, suffix in (("a", ".jpg"), ("b", ".png")):
        (tmp_path / folder).mkdir()
        Image.open(EXAMPLES / "cat.jpg").save(tmp_path / folder / f"cat{suffix}")
    out = tmp_path / "out"
    result = run(
        "explain", str(tmp_path / "a" / "cat.jpg"), str(tmp_path / "b" / "cat.png"), "--methods", "gradcam",
        "--output-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.glob("*.jpg")} == {
        f"{stem}-efficientnet_lite0-{s}.jpg" for stem in ("a_cat", "b_cat") for s in ("heatmap", "cam")
    }
    assert "written as a_cat" in result.stdout and "written as b_cat" in result.stdout


@pytest.mark.slow
def test_compare_several_images_with_class_layer_methods_and_topk(run, tmp_path):
    out = tmp_path / "out"
    result = run(
        "compare", str(EXAMPLES / "cat.jpg"), str(EXAMPLES / "cat_and_cup.jpg"),
        "--networks", "efficientnet_lite0,vgg16", "--class-id", "281", "--layer-name", "efficientnet_lite0=blocks.6",
        "--methods", "gradcam", "--topk", "3", "--output-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for stem in ("cat", "cat_and_cup"):
        md = (out / f"{stem}-compare.md").read_text()
        assert "class 281 (tabby)" in md and "Grad-CAM heatmap" in md and "Grad-CAM++" not in md
        assert (out / f"{stem}-efficientnet_lite0-cam.jpg").is_file()
    index = (out / "index.html").read_text()
    assert 'href="cat-compare.html"' in index and 'href="cat_and_cup-compare.html"' in index
    assert "[layer blocks.6]" in result.stdout
    unavailable = [line for line in result.stdout.splitlines() if line.startswith("vgg16")]
    assert unavailable and "unavailable: no weights for vgg16" in unavailable[0]
    assert "--weights vgg16=FILE" in unavailable[0] and "--weight-path" not in unavailable[0]


@pytest.mark.slow
def test_the_custom_model_story_runs_with_the_shipped_weights(run, tmp_path):
    out = tmp_path / "out"
    result = run(
        "explain", str(EXAMPLES / "patch_red.png"), *PATCH_MODEL, "--weight-path", str(EXAMPLES / "patch_net.pt"),
        "--methods", "gradcam", "--save-maps", "--output-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    assert "explained: class 0 (red)" in result.stdout
    cam = load_maps(out / "patch_red-cifar_net-net-maps.npz")["patch_red"]["gradcam"]
    share = cam[20:27, 4:11].sum() / cam.sum()  # the red square is 7 x 7 at (20, 4): 4.8% of the image
    assert share > 3 * (49 / 1024), share
    # without weights it still runs, with a warning that says so
    bare = run("explain", str(EXAMPLES / "patch_red.png"), *PATCH_MODEL, "--output-dir", str(tmp_path / "bare"))
    assert bare.returncode == 0 and "warning: no --weight-path" in bare.stderr


@pytest.mark.slow
def test_resume_does_only_the_images_not_done(run, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(EXAMPLES / "cat.jpg", folder / name)
    out = tmp_path / "out"
    args = ["explain", str(folder), "--methods", "gradcam", "--output-dir", str(out)]
    assert run(*args).returncode == 0
    shutil.copy(EXAMPLES / "two_cats.jpg", folder / "c.jpg")
    again = run(*args)
    assert again.returncode == 0, again.stderr
    assert "explained 1 image" in again.stdout and "2 done before" in again.stdout


@pytest.mark.slow
def test_any_name_offline_says_what_it_lacks_and_random_weights_run_with_a_warning(run, tmp_path):
    listing = run("networks")
    header, first = listing.stdout.splitlines()[:2]
    assert listing.returncode == 0 and header.split() == ["network", "weights"]
    assert first.startswith("efficientnet_lite0") and "bundled" in first
    out = tmp_path / "out"
    refused = run("explain", str(EXAMPLES / "cat.jpg"), "--network", "convnext_atto", "--output-dir", str(out))
    assert refused.returncode == 2 and "--random-weights" in refused.stderr and not out.exists()
    result = run(
        "explain", str(EXAMPLES / "cat.jpg"), "--network", "convnext_atto", "--random-weights", "--methods", "gradcam",
        "--output-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "runs with random weights" in result.stderr and "layer stages" in result.stdout
