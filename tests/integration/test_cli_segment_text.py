"""``camlens segment`` and ``camlens explain --text``: through the folder run (camlens.pipeline.targets), a
row per (image, target) in classes.csv / prompts.csv whose numbers are the library's own, pictures per target,
bad files as rows, resuming, and one-line errors. Tiny models of camlens.synthetic with random weights."""

from __future__ import annotations

import csv
import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from camlens.cli.main import main
from camlens.images import read_image, to_batch
from camlens.pipeline.table import read_table
from camlens.zoo.network import IMAGENET_MEAN, IMAGENET_STD

FACTORIES = textwrap.dedent(
    """
    import torch
    from camlens.synthetic import ContextSegmenter, TinyClip, tokenize

    def segmenter():
        torch.manual_seed(0)
        return ContextSegmenter()

    def clip():
        torch.manual_seed(0)
        return TinyClip(), tokenize

    def clip_with_a_bad_tokenizer():
        return TinyClip(), "tokenize"
    """
)


@pytest.fixture()
def folder(tmp_path):
    """Two photos (a red-marked and a blue-marked scene of camlens.synthetic, 40 x 48) and one bad file."""
    from camlens.synthetic import marker_scenes

    images, _, _ = marker_scenes(2, seed=5, size=40)
    photos = tmp_path / "in"
    photos.mkdir()
    for i, image in enumerate(images):
        rgb = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(np.ascontiguousarray(rgb[:, :36])).save(photos / f"p{i}.png")
    (photos / "broken.png").write_bytes(b"not an image")
    (tmp_path / "models.py").write_text(FACTORIES, encoding="utf-8")
    (tmp_path / "labels.txt").write_text("marker\nred\nblue\ngreen\n", encoding="utf-8")
    return tmp_path


def _csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _inputs(folder, stems):
    return to_batch([read_image(folder / "in" / f"{s}.png") for s in stems], (32, 32), IMAGENET_MEAN, IMAGENET_STD)


def test_segment_writes_a_mask_a_picture_per_class_and_the_library_numbers(folder, capsys):
    from camlens.segmentation import explain_segmentation
    from camlens.synthetic import ContextSegmenter

    out = folder / "out"
    args = ["segment", str(folder / "in"), "--model", f"{folder}/models.py:segmenter", "--input-size", "32",
            "--labels", str(folder / "labels.txt"), "--methods", "gradcam", "layercam", "--output-dir", str(out),
            "--batch-size", "2"]  # fmt: skip
    assert main(args) == 2  # the bad file fails, the others are done
    err = capsys.readouterr().err
    assert "broken.png" in err and "Traceback" not in err
    rows = {row["stem"]: row for row in read_table(out)}
    assert rows["broken"]["status"] == "error" and rows["p0"]["status"] == "ok"
    listed = _csv(out / "classes.csv")
    torch.manual_seed(0)
    model = ContextSegmenter().eval()
    x = _inputs(folder, ["p0", "p1"])
    for i, stem in enumerate(["p0", "p1"]):
        mine = [r for r in listed if r["stem"] == stem]
        expected = explain_segmentation(model, x[i : i + 1], ["gradcam"])  # the classes predicted in this image
        predicted = expected.predicted[0]
        assert [int(r["class_id"]) for r in mine] == list(expected.classes)
        assert sum(float(r["pixel_share"]) for r in mine) == pytest.approx(1.0, abs=1e-5)
        for k, row in enumerate(mine):
            c = int(row["class_id"])
            assert row["class_name"] == ["marker", "red", "blue", "green"][c]
            assert float(row["pixel_share"]) == pytest.approx(float((predicted == c).float().mean()), abs=1e-6)
            assert float(row["score"]) == pytest.approx(float(expected.scores[0, k]), rel=1e-4)
            for method in ("gradcam", "layercam"):
                name = f"{stem}-models-segmenter-class{c}-{row['class_name']}-{method}.jpg"
                assert name in row["files"].split(";") and (out / name).is_file()
        assert (out / f"{stem}-models-segmenter-mask.jpg").is_file()
        mask = np.asarray(Image.open(out / f"{stem}-models-segmenter-mask.jpg"))
        assert mask.shape[1] == 36 and mask.shape[0] > 40  # the photo's width, a legend below it
    # resume: nothing is done again; other classes are another task (their rows are redone)
    assert main(args) == 2
    assert "2 done before (resumed)" in capsys.readouterr().out
    assert main([*args, "--classes", "1", "3", "--overwrite"]) == 2
    printed = capsys.readouterr().out
    assert "done before" not in printed
    again = [r for r in _csv(out / "classes.csv") if r["stem"] == "p0"]
    assert [int(r["class_id"]) for r in again] == [1, 3]


def test_segment_saves_compact_maps_that_are_the_class_maps(folder, capsys):
    from camlens.run import load_maps
    from camlens.segmentation import explain_segmentation
    from camlens.synthetic import ContextSegmenter

    out = folder / "maps"
    torch.manual_seed(0)
    model = ContextSegmenter().eval()
    c = explain_segmentation(model, _inputs(folder, ["p0"]), ["gradcam"]).classes[0]  # a class predicted in p0
    status = main(["segment", str(folder / "in" / "p0.png"), "--model", f"{folder}/models.py:segmenter",
                   "--input-size", "32", "--classes", str(c), "--no-pictures", "--output-dir", str(out)])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    (name,) = [p for p in out.iterdir() if p.suffix == ".npz"]
    stored = load_maps(name)["p0"][f"class{c}/gradcam"]
    rgb = read_image(folder / "in" / "p0.png")
    expected = explain_segmentation(model, _inputs(folder, ["p0"]), ["gradcam"], classes=[c])
    from camlens.postprocess import cam_to_image

    photo = cam_to_image(expected.raw["gradcam"][:, 0].float(), rgb.shape[:2])[0].numpy()
    assert photo.max() == pytest.approx(1.0)  # a map that is not zero
    assert stored.shape == rgb.shape[:2]
    assert np.abs(stored - photo).max() < 2e-3  # float16 in the batch file


def test_segment_torchvision_names_use_voc_classes_and_never_download(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    photo = str(folder / "in" / "p0.png")
    assert main(["segment", photo, "--network", "lraspp_mobilenet_v3_large", "--output-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no weights for lraspp_mobilenet_v3_large" in err[0] and "--random-weights" in err[0]
    assert not (tmp_path / "x").exists()
    out = tmp_path / "tv"
    status = main(["segment", photo, "--network", "lraspp_mobilenet_v3_large", "--random-weights", "--input-size",
                   "64", "--output-dir", str(out)])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    (row,) = read_table(out)
    assert row["layer"] == "backbone.16"  # the family's layer, not the classifier
    voc = ("__background__ aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike "
           "person pottedplant sheep sofa train tvmonitor").split()
    assert all(t["class_name"] == voc[t["class_id"]] for t in row["classes"]) and row["classes"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--methods", "guided_backprop"], "unknown method 'guided_backprop' for camlens segment"),
        (["--classes", "7"], "--classes 7: models-segmenter has 4 classes"),
        (["--model", "nowhere.py:f"], "model file nowhere.py does not exist"),
    ],
)
def test_segment_usage_errors_are_one_line(folder, capsys, argv, message):
    base = ["segment", str(folder / "in" / "p0.png"), "--model", f"{folder}/models.py:segmenter",
            "--labels", str(folder / "labels.txt"), "--output-dir", str(folder / "e")]  # fmt: skip
    assert main([*base, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_explain_text_writes_a_picture_and_a_row_per_prompt(folder, capsys):
    from camlens.synthetic import TinyClip, tokenize
    from camlens.text import explain_text

    out = folder / "text"
    prompts = ["red", "a blue square"]
    args = ["explain", str(folder / "in"), "--model", f"{folder}/models.py:clip", "--input-size", "32", "--text",
            *prompts, "--methods", "gradcam", "gscorecam", "--output-dir", str(out)]  # fmt: skip
    assert main(args) == 2
    assert "broken.png" in capsys.readouterr().err
    listed = _csv(out / "prompts.csv")
    assert [(r["stem"], r["prompt"]) for r in listed] == [(s, p) for s in ("p0", "p1") for p in prompts]
    torch.manual_seed(0)
    model = TinyClip().eval()
    expected = explain_text(model, _inputs(folder, ["p0", "p1"]), prompts, ["gradcam"], tokenizer=tokenize)
    for row in listed:
        i, t = int(row["stem"][1]), prompts.index(row["prompt"])
        assert float(row["similarity"]) == pytest.approx(float(expected.similarity[i, t]), abs=1e-5)
        slug = "red" if t == 0 else "a_blue_square"
        for method in ("gradcam", "gscorecam"):
            assert (out / f"{row['stem']}-models-clip-prompt{t}-{slug}-{method}.jpg").is_file()
    rows = {r["stem"]: r for r in read_table(out)}
    assert rows["broken"]["status"] == "error" and [p["prompt"] for p in rows["p0"]["prompts"]] == prompts
    assert main(args) == 2
    assert "2 done before (resumed)" in capsys.readouterr().out
    assert main([*args[:-2], "--output-dir", str(out), "--text", "green", "--overwrite"]) == 2  # new prompts: redone
    assert [r["prompt"] for r in _csv(out / "prompts.csv")] == ["green", "green"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "{f}/models.py:clip", "--methods", "guided_backprop"], "unknown method 'guided_backprop'"),
        (["--model", "{f}/models.py:clip", "--json"], "--text does not take --json"),
        ([], "--text needs an image-text model"),
        (["--model", "{f}/models.py:segmenter"], "explain_text needs an image-text model"),
        (["--model", "{f}/models.py:clip_with_a_bad_tokenizer"], "(or a (module, tokenizer) pair)"),
        (["--network", "open_clip:ViT-B-32"], "no weights for open_clip:ViT-B-32"),
        (["--network", "open_clip:ViT-B-99", "--random-weights"], "unknown open_clip architecture 'ViT-B-99'"),
    ],
)
def test_explain_text_usage_errors_are_one_line(folder, capsys, argv, message):
    argv = [a.replace("{f}", str(folder)) for a in argv]
    base = ["explain", str(folder / "in" / "p0.png"), "--input-size", "32", "--text", "red"]
    assert main([*base, *argv, "--output-dir", str(folder / "e")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any(message in line for line in err) and not any("Traceback" in line for line in err), err
    assert err[-1].startswith("camlens: error:") and message in err[-1]


@pytest.mark.slow
def test_explain_text_with_an_open_clip_architecture(folder, tmp_path, capsys):
    out = tmp_path / "vit"
    status = main(["explain", str(folder / "in" / "p0.png"), "--network", "open_clip:ViT-B-32", "--random-weights",
                   "--text", "a dog", "a cat", "--output-dir", str(out)])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    (row,) = read_table(out)
    assert row["layer"] == "visual.transformer.resblocks.11.ln_1" and len(row["prompts"]) == 2
    assert all(-1 <= p["similarity"] <= 1 for p in row["prompts"])
    assert json.dumps(row)  # plain JSON
