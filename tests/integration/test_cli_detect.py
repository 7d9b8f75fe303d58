"""``camlens detect`` through the real command (a subprocess): the folder run of camlens.pipeline.detections, a row
per (image, box) in boxes.csv whose boxes, scores and maps are the library's own (the tiny detector of
camlens.synthetic, trained here, given as a ``--model`` factory with ``--weights``), reference boxes matched by
IoU, the zoo's detectors with random weights, bad files as rows and one-line errors."""

from __future__ import annotations

import csv
import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from camlens.pipeline.table import read_table

FACTORIES = textwrap.dedent(
    """
    from camlens.synthetic import TinyCenterNet, square_adapter

    def detector():
        return TinyCenterNet(), square_adapter()

    def plain():
        return TinyCenterNet()
    """
)
NET = "models-detector"


@pytest.fixture(scope="module")
def trained():
    from camlens.synthetic import trained_detector

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # convolutions this small only lose to threads
    try:
        return trained_detector()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture()
def folder(tmp_path, trained):
    """Two scenes of three squares (48 x 48 PNG), a bad file, the factories, the trained weights, class names."""
    from camlens.synthetic import square_scenes

    images, boxes = square_scenes(2, torch.Generator().manual_seed(7))
    photos = tmp_path / "in"
    photos.mkdir()
    for i, image in enumerate(images):
        rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(rgb).save(photos / f"p{i}.png")
    (photos / "broken.png").write_bytes(b"not an image")
    (tmp_path / "models.py").write_text(FACTORIES, encoding="utf-8")
    torch.save(trained.state_dict(), tmp_path / "tiny.pt")
    (tmp_path / "labels.txt").write_text("red\ngreen\nblue\n", encoding="utf-8")
    return tmp_path, boxes


def _csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _photo(path):
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1).float() / 255


def _one_line(result):
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("camlens: error")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_detect_writes_every_box_of_the_library_with_its_maps(folder, trained, run):
    from camlens.detection import explain_detections
    from camlens.run import load_maps
    from camlens.synthetic import square_adapter

    root, _ = folder
    out = root / "out"
    args = ["detect", str(root / "in"), "--model", f"{root}/models.py:detector", "--weights", str(root / "tiny.pt"),
            "--labels", str(root / "labels.txt"), "--methods", "gradcam", "odam", "--save-maps",
            "--output-dir", str(out)]  # fmt: skip
    done = run(*args, cwd=root)
    assert done.returncode == 2, done.stderr  # the bad file fails, the others are done
    assert "broken.png" in done.stderr and "Traceback" not in done.stderr
    rows = {row["stem"]: row for row in read_table(out)}
    assert rows["broken"]["status"] == "error" and rows["p0"]["status"] == "ok" and rows["p1"]["status"] == "ok"
    listed = _csv(out / "boxes.csv")
    for stem in ("p0", "p1"):
        photo = _photo(root / "in" / f"{stem}.png")
        expected = explain_detections(trained, [photo], ["gradcam", "odam"], max_detections=20,
                                      adapter=square_adapter()).detections[0]  # fmt: skip
        mine = [r for r in listed if r["stem"] == stem]
        assert len(mine) == len(expected) >= 3  # the three squares (and any other box above 0.5), the best first
        stored = load_maps(out / f"{stem}-{NET}-maps.npz")[stem]
        for j, (row, d) in enumerate(zip(mine, expected, strict=True)):
            assert int(row["box"]) == j and int(row["label"]) == d.label
            assert row["class_name"] == ["red", "green", "blue"][d.label]
            assert float(row["score"]) == pytest.approx(d.score, abs=1e-6)
            assert [float(row[c]) for c in ("x1", "y1", "x2", "y2")] == pytest.approx(list(d.box), abs=0.01)
            for method in ("gradcam", "odam"):
                name = f"{stem}-{NET}-box{j}-{method}.jpg"
                assert name in row["files"].split(";") and (out / name).is_file()
                np.testing.assert_allclose(stored[f"box{j}/{method}"], d.maps[method].numpy(), atol=1e-5)
        picture = np.asarray(Image.open(out / f"{stem}-{NET}-boxes.jpg")).astype(float)
        assert picture.shape == (48, 48, 3)
        x1, y1, x2, _ = (int(v) for v in expected[0].box)  # the best box's outline is drawn over the photo
        plain = photo.permute(1, 2, 0).numpy() * 255
        assert np.abs(picture[y1, x1:x2] - plain[y1, x1:x2]).mean() > 40
    # resume: nothing is done again, no file is written again
    written = {f.name: f.stat().st_mtime_ns for f in out.iterdir() if f.suffix in (".jpg", ".npz")}
    again = run(*args, cwd=root)
    assert again.returncode == 2 and "2 done before (resumed)" in again.stdout
    assert {f.name: f.stat().st_mtime_ns for f in out.iterdir() if f.suffix in (".jpg", ".npz")} == written
    assert [r["stem"] for r in _csv(out / "boxes.csv")] == [r["stem"] for r in listed]  # no row twice


def test_detect_matches_reference_boxes_by_iou(folder, trained, run):
    root, boxes = folder
    references = {
        "p0.png": [{"box": boxes[0, 2].tolist(), "label": 2}, {"box": boxes[0, 0].tolist(), "label": 0},
                   {"box": [0, 0, 3, 3], "label": 1}],  # a box nothing matches
        "p1.png": [boxes[1, 1].tolist()],  # unlabelled: any class
    }  # fmt: skip
    (root / "boxes.json").write_text(json.dumps(references), encoding="utf-8")
    out = root / "refs"
    done = run("detect", str(root / "in" / "p0.png"), str(root / "in" / "p1.png"), "--model",
               f"{root}/models.py:detector", "--weights", str(root / "tiny.pt"), "--boxes", str(root / "boxes.json"),
               "--output-dir", str(out), cwd=root)  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = _csv(out / "boxes.csv")
    p0 = [r for r in listed if r["stem"] == "p0"]
    assert [r["label"] for r in p0] == ["2", "0", ""]
    for row, reference in zip(p0[:2], [boxes[0, 2], boxes[0, 0]], strict=True):
        assert json.loads(row["reference"].replace(";", ",").join("[]")) == pytest.approx(reference.tolist())
        assert float(row["iou"]) >= 0.5 and float(row["score"]) > 0.3
    assert p0[2]["score"] == "" and float(p0[2]["iou"]) < 0.5  # unmatched: no score, empty maps, a note
    assert "no output box matches the reference box" in done.stdout
    (p1,) = [r for r in listed if r["stem"] == "p1"]
    assert p1["label"] == "1" and float(p1["iou"]) >= 0.5
    assert (out / f"p0-{NET}-box2-gradcam.jpg").is_file() and (out / f"p0-{NET}-boxes.jpg").is_file()


@pytest.mark.parametrize(
    "network",
    [
        "fasterrcnn_mobilenet_v3_large_fpn",
        "ssdlite320_mobilenet_v3_large",
        "yolov8n",
        pytest.param("fasterrcnn_resnet50_fpn", marks=pytest.mark.slow),
        pytest.param("fasterrcnn_resnet50_fpn_v2", marks=pytest.mark.slow),
        pytest.param("maskrcnn_resnet50_fpn", marks=pytest.mark.slow),
        pytest.param("keypointrcnn_resnet50_fpn", marks=pytest.mark.slow),
        pytest.param("retinanet_resnet50_fpn", marks=pytest.mark.slow),
        pytest.param("fcos_resnet50_fpn", marks=pytest.mark.slow),
        pytest.param("ssd300_vgg16", marks=pytest.mark.slow),
        pytest.param("yolo11n", marks=pytest.mark.slow),
    ],
)
def test_detect_zoo_detectors_with_random_weights(folder, run, network):
    """Each detector at a small input side (SSD300's VGG extras need 300 px)."""
    if network.startswith("yolo"):
        pytest.importorskip("ultralytics")
    root, _ = folder
    out = root / network
    side = "300" if network == "ssd300_vgg16" else "64"
    done = run("detect", str(root / "in" / "p0.png"), "--network", network, "--random-weights", "--score-threshold",
               "0", "--max-detections", "2", "--input-size", side, "--methods", "gradcam", "eigencam",
               "--output-dir", str(out), cwd=root)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "random weights" in done.stderr and "Traceback" not in done.stderr
    listed = _csv(out / "boxes.csv")
    assert [int(r["box"]) for r in listed] == [0, 1]  # random weights: the two best boxes at threshold 0
    assert float(listed[0]["score"]) >= float(listed[1]["score"])
    for row in listed:
        assert row["class_name"] and not row["class_name"].startswith("class ")  # the checkpoints' COCO names
        for method in ("gradcam", "eigencam"):
            assert (out / f"p0-{network}-box{row['box']}-{method}.jpg").is_file()
    assert np.asarray(Image.open(out / f"p0-{network}-boxes.jpg")).shape == (48, 48, 3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--network", "fasterrcnn_mobilenet_v3_large_fpn"], "no weights for fasterrcnn_mobilenet_v3_large_fpn"),
        (["--network", "yolov8n"], "yolov8n has no weights here: pass --weights FILE"),
        (["--network", "resnet18", "--random-weights"], "resnet18 is not a detector"),
        (["--network", "yolov8n", "--methods", "gradcan"], "unknown method 'gradcan' for camlens detect"),
        (["--network", "yolov8n", "--max-detections", "0"], "--max-detections must be at least 1"),
        (["--network", "yolov8n", "--score-threshold", "1.5"], "--score-threshold must be between 0 and 1"),
        (["--network", "yolov8n", "--masks", "0"], "--masks must be at least 1"),
        (["--network", "yolov8n", "--input-size", "64", "32"], "--input-size takes one side"),
        (["--network", "yolov8n", "--boxes", "missing.json"], "boxes file missing.json does not exist"),
        (["--model", "models.py:plain"], "camlens does not know how to read boxes from a TinyCenterNet"),
        (["--network", "yolov8n", "--boxes", "bad.json"], "bad.json: p0.png: a box must be [x1, y1, x2, y2]"),
        ([], "camlens detect needs --network NAME"),
    ],
)
def test_detect_usage_errors_are_one_line(folder, run, argv, message):
    root, _ = folder
    (root / "bad.json").write_text('{"p0.png": [[1, 2, 3]]}', encoding="utf-8")
    done = run("detect", str(root / "in" / "p0.png"), *argv, "--output-dir", str(root / "err"), cwd=root)
    assert done.returncode == 2 and message in _one_line(done)
    assert not (root / "err").exists()  # no partial output


def test_detect_task_leaves_the_model_untouched(folder, tmp_path):
    """The folder run of a torchvision detector (resized and its score threshold lowered for the run): the model,
    its transform's sizes and its score threshold are as found afterwards, also when the run raises."""
    from camlens.errors import UsageError
    from camlens.pipeline.detections import Detections
    from camlens.run import RunOptions, run
    from camlens.zoo.detectors import load_detector
    from helpers import assert_untouched, snapshot

    root, _ = folder
    network = load_detector("fasterrcnn_mobilenet_v3_large_fpn", None, True, True)
    model = network.model
    found = (model.transform.min_size, model.transform.max_size, model.roi_heads.score_thresh)
    before = snapshot(model)
    task = Detections(score_threshold=0.0, max_detections=2, labels=tuple(network.labels), side=64)
    options = RunOptions(methods=("gradcam", "odam"), batch_size=2)
    summary = run(network, [root / "in"], tmp_path / "task", options, task=task)
    assert len(summary.results) == 3 and len(summary.failures) == 1  # broken.png
    assert all(len(r.targets) == 2 for r in summary.results if r.ok)
    assert_untouched(model, before)
    assert (model.transform.min_size, model.transform.max_size, model.roi_heads.score_thresh) == found
    bad = RunOptions(methods=("gradcam",), target_layer="no.such.layer")
    with pytest.raises(UsageError):
        run(network, [root / "in" / "p0.png"], tmp_path / "bad", bad, task=task)
    assert_untouched(model, before)
    assert (model.transform.min_size, model.transform.max_size, model.roi_heads.score_thresh) == found


DETR_FACTORY = textwrap.dedent(
    """
    import torch
    import transformers

    def detr():
        transformers.logging.set_verbosity_error()
        torch.manual_seed(0)
        config = transformers.DetrConfig(
            use_timm_backbone=True, backbone="resnet18", use_pretrained_backbone=False, num_queries=6, d_model=32,
            encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2,
            decoder_attention_heads=2, num_labels=3,
        )
        return transformers.DetrForObjectDetection(config).eval()
    """
)


def test_detect_takes_a_hugging_face_detr_from_a_factory(folder, run):
    """A DETR needs no adapter: a row per query box, with its score and map files, the library's own numbers."""
    pytest.importorskip("transformers")
    root, _ = folder
    (root / "detr.py").write_text(DETR_FACTORY, encoding="utf-8")
    out = root / "detr-out"
    done = run("detect", str(root / "in" / "p0.png"), "--model", "detr.py:detr", "--score-threshold", "0",
               "--max-detections", "2", "--input-size", "48", "--methods", "gradcam", "--output-dir", str(out),
               cwd=root)  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = _csv(out / "boxes.csv")
    assert [int(r["box"]) for r in listed] == [0, 1]
    import importlib.util

    spec = importlib.util.spec_from_file_location("detr_factory", root / "detr.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from camlens.detection import explain_detections

    expected = explain_detections(module.detr(), [_photo(root / "in" / "p0.png")], ["gradcam"], score_threshold=0.0,
                                  max_detections=2).detections[0]  # fmt: skip
    for row, d in zip(listed, expected, strict=True):
        assert float(row["score"]) == pytest.approx(d.score, abs=1e-5)
        assert (out / f"p0-detr-detr-box{row['box']}-gradcam.jpg").is_file()
