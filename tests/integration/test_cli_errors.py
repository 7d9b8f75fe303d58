"""Bad input: one line naming the problem, a non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import EXAMPLES

SIX = ["heatmap", "cam", "heatmap++", "cam++", "gb", "cam_gb"]


def _assert_clean_failure(result, out, *needles):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("camlens: error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir()), "partial output left behind"


@pytest.fixture
def bad_files(tmp_path):
    files = {}
    files["empty"] = tmp_path / "empty.jpg"
    files["empty"].write_bytes(b"")
    files["text"] = tmp_path / "notes.jpg"
    files["text"].write_text("this is not an image\n")
    data = (EXAMPLES / "cat.jpg").read_bytes()
    files["truncated"] = tmp_path / "truncated.jpg"
    files["truncated"].write_bytes(data[: len(data) // 3])
    files["folder"] = tmp_path / "a_folder.jpg"
    files["folder"].mkdir()
    return files


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("missing", ["does not exist"]),
        ("empty", ["is empty"]),
        ("text", ["not an image"]),
        ("truncated", ["damaged or truncated"]),
        ("folder", ["holds no images"]),
    ],
)
def test_bad_images(run, tmp_path, bad_files, case, needles):
    path = tmp_path / "missing.jpg" if case == "missing" else bad_files[case]
    out = tmp_path / "out"
    # alone: one line, exit 2, nothing written
    _assert_clean_failure(run("explain", str(path), "--output-dir", str(out)), out, str(path.name), *needles)
    # with --fail-fast the bad image stops the run before anything is written
    result = run("explain", str(path), str(EXAMPLES / "cat.jpg"), "--fail-fast", "--output-dir", str(out))
    _assert_clean_failure(result, out, str(path.name), *needles)


def test_a_bad_image_among_good_ones_is_reported_and_the_good_work_kept(run, tmp_path, bad_files):
    out = tmp_path / "out"
    result = run("explain", str(bad_files["truncated"]), str(EXAMPLES / "cat.jpg"), "--output-dir", str(out))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("camlens: error:")]
    assert len(errors) == 1 and "truncated.jpg" in errors[0] and "damaged or truncated" in errors[0]
    assert "Traceback" not in result.stderr
    written = sorted(p.name for p in out.iterdir() if p.suffix == ".jpg")
    assert written == sorted(f"cat-efficientnet_lite0-{s}.jpg" for s in SIX)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(Path(r["path"]).name, r["status"]) for r in rows] == [("truncated.jpg", "error"), ("cat.jpg", "ok")]
    assert "1 failed" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("option", "needles"),
    [
        (["--network", "resnet5O"], ["unknown network 'resnet5O'", "resnet50"]),
        (["--layer-name", "bn3"], ["no layer named 'bn3'", "bn2"]),
        (["--class-id", "1000"], ["class 1000 is out of range", "1000 outputs"]),
    ],
    ids=["unknown-network", "unknown-layer", "class-out-of-range"],
)
def test_bad_names_and_numbers(run, tmp_path, option, needles):
    out = tmp_path / "out"
    result = run("explain", str(EXAMPLES / "cat.jpg"), *option, "--output-dir", str(out))
    _assert_clean_failure(result, out, *needles)


@pytest.mark.slow
def test_missing_torchvision_weights_say_what_to_do(run, tmp_path):
    out = tmp_path / "out"
    env = {"TORCH_HOME": str(tmp_path / "torch-home")}
    result = run("explain", str(EXAMPLES / "cat.jpg"), "--network", "vgg16", "--output-dir", str(out), env=env)
    _assert_clean_failure(result, out, "no weights for vgg16", "--weight-path", "vgg16-397923af.pth")


def test_junk_weight_file(run, tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00garbage" * 100)
    out = tmp_path / "out"
    result = run("explain", str(EXAMPLES / "cat.jpg"), "--weight-path", str(junk), "--output-dir", str(out))
    _assert_clean_failure(result, out, "junk.pth is not a PyTorch weight file")


def test_weights_of_another_architecture_name_the_keys(run, tmp_path):
    import torchvision

    other = tmp_path / "resnet18.pth"
    torch.save({"state_dict": torchvision.models.resnet18().state_dict()}, other)
    out = tmp_path / "out"
    result = run("explain", str(EXAMPLES / "cat.jpg"), "--weight-path", str(other), "--output-dir", str(out))
    _assert_clean_failure(result, out, "do not fit efficientnet_lite0", "missing (conv_stem.weight", "unexpected (")


def test_output_dir_that_cannot_be_written(run, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "results"
    result = run("explain", str(EXAMPLES / "cat.jpg"), "--output-dir", str(out))
    _assert_clean_failure(result, out, "cannot be written")
    result = run("explain", str(EXAMPLES / "cat.jpg"), "--output-dir", str(blocker))
    assert result.returncode == 2 and "is a file" in result.stderr and blocker.read_text() == "x"


@pytest.mark.slow
def test_no_image_and_bad_numbers(run, tmp_path):
    out = tmp_path / "out"
    _assert_clean_failure(run("explain", "--output-dir", str(out)), out, "no image given")
    _assert_clean_failure(
        run("explain", str(EXAMPLES / "cat.jpg"), "--topk", "0", "--output-dir", str(out)), out, "--topk"
    )
    _assert_clean_failure(
        run("explain", str(EXAMPLES / "cat.jpg"), "--device", "cuda:7", "--output-dir", str(out))
        if not torch.cuda.is_available()
        else run("explain", str(EXAMPLES / "cat.jpg"), "--device", "nonsense", "--output-dir", str(out)),
        out,
        "device",
    )
