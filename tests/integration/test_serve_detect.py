"""The viewer serving a detector: ``/api/explain`` answers the boxes and a map per box.

Oracle: the boxes (x1, y1, x2, y2, class, score) and every box's map the server sends equal
:func:`camlens.explain_detections` run on the same image with the same options (the maps to the PNG's 8 bits).
The detector is :class:`camlens.synthetic.TinyCenterNet` with seeded random weights and its adapter: random
weights give boxes (its heat map's local maxima). The server's guards and its 4xx answers hold for it too.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

import camlens
from camlens.detection import detection_methods, explain_detections
from camlens.synthetic import SCENE_SIZE, SQUARE_NAMES, TinyCenterNet, square_adapter, square_scenes
from camlens.zoo import Network
from helpers import tiny_viewer_network

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install camlens[serve]")
from starlette.testclient import TestClient  # noqa: E402

from camlens.serve import create_app  # noqa: E402
from camlens.serve.explorer import Explorer  # noqa: E402
from camlens.serve.guard import allowed_hosts  # noqa: E402

RAW = {"content-type": "application/octet-stream"}


def _detector() -> Network:
    torch.manual_seed(3)
    return Network("squares", TinyCenterNet().eval(), (SCENE_SIZE, SCENE_SIZE), labels=list(SQUARE_NAMES),
                   adapter=square_adapter())  # fmt: skip


def _scene() -> np.ndarray:
    images, _ = square_scenes(1, torch.Generator().manual_seed(5))
    return (images[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _gray(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))).astype(int)


@pytest.fixture(scope="module")
def served():
    explorer = Explorer(_detector(), [], examples_dir=None)
    return explorer, TestClient(create_app(explorer))


def test_boxes_and_each_boxs_maps_are_explain_detections(served):
    explorer, client = served
    rgb = _scene()
    methods = ["gradcam", "odam"]
    answer = client.post(
        "/api/explain", params={"methods": ",".join(methods), "score_threshold": 0.3, "max_boxes": 4},
        content=_png(rgb), headers=RAW,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    run = answer.json()
    image = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255
    want = explain_detections(
        explorer.network(None).model, [image], methods, score_threshold=0.3, max_detections=4, adapter=square_adapter()
    ).detections[0]
    assert run["detector"] is True and run["layer"] == "features" and len(want) == 4
    assert [e["class_id"] for e in run["topk"]] == [0, 1, 2, 3]
    for entry, d in zip(run["topk"], want, strict=True):
        assert entry["box"] == pytest.approx(list(d.box))
        assert entry["view_box"] == pytest.approx(list(d.box), abs=0.01)  # a 48 px image is shown at its size
        assert entry["class"] == d.label and entry["class_name"] == SQUARE_NAMES[d.label]
        assert entry["label"] == SQUARE_NAMES[d.label]
        assert entry["score"] == pytest.approx(d.score, abs=1e-6)
    assert sorted(run["maps"]) == ["0"]  # the first box's maps come with the answer, the others on request
    for j, d in enumerate(want):
        maps = run["maps"]["0"] if j == 0 else client.get(f"/api/runs/{run['run_id']}/classes/{j}").json()["maps"]
        for m in methods:
            expected = (d.maps[m].numpy() * 255 + 0.5).astype(int)
            got = _gray(maps[m]["png"])
            assert got.shape == (SCENE_SIZE, SCENE_SIZE)
            assert np.abs(got - expected).max() <= 1, (j, m)
            assert [p["kind"] for p in maps[m]["pictures"]] == ["heatmap", "overlay"]
    # each box gets its own map (ODAM's is where the box is; Grad-CAM's pooled weights here depend on the class only)
    assert np.abs(_gray(run["maps"]["0"]["odam"]["png"]) - (want[1].maps["odam"].numpy() * 255)).max() > 10


def test_a_detector_answers_4xx_with_a_message(served):
    explorer, client = served
    body = _png(_scene())
    classifier_only = sorted(set(camlens.available_methods()) - set(detection_methods()))
    assert classifier_only, "some classifier method is not a detection method"
    for params, status, words in [
        ({"score_threshold": 2}, 422, "score_threshold must be between 0 and 1"),
        ({"max_boxes": 0}, 422, "max_boxes must be between 1 and"),
        ({"methods": "nope"}, 422, "nope"),
        ({"methods": classifier_only[0]}, 422, "explains a detector"),
        ({"layer": "no.such.layer"}, 422, "no.such.layer"),
    ]:
        answer = client.post("/api/explain", params=params, content=body, headers=RAW)
        assert answer.status_code == status, (params, answer.text)
        detail = answer.json()["detail"]
        assert "\n" not in detail and words in detail, (params, detail)
    # a classifier method beside a detection method is left out with a note, as for prompts
    answer = client.post("/api/explain", params={"methods": f"gradcam,{classifier_only[0]}", "score_threshold": 0.3},
                         content=body, headers=RAW).json()  # fmt: skip
    assert answer["methods"] == ["gradcam"] and any("not for detectors" in n for n in answer["notes"])
    faith = client.get(f"/api/runs/{answer['run_id']}/classes/0/faithfulness")
    assert faith.status_code == 422 and "detector" in faith.json()["detail"]
    # no box at the threshold: an answer without boxes, and a note saying why
    none = client.post("/api/explain", params={"score_threshold": 1.0}, content=body, headers=RAW).json()
    assert none["topk"] == [] and any("no box scored at least 1" in n for n in none["notes"])
    layers = client.get("/api/layers").json()
    assert layers["detector"] is True and layers["layers"] == []


def test_a_classifier_refuses_the_box_options():
    client = TestClient(create_app(Explorer(tiny_viewer_network(), [])))
    answer = client.post("/api/explain", params={"score_threshold": 0.2}, content=_png(_scene()), headers=RAW)
    assert answer.status_code == 422 and "not a detector" in answer.json()["detail"]


def test_the_guards_hold_for_a_detector():
    hosts = allowed_hosts("127.0.0.1", 8000)
    explorer = Explorer(_detector(), [])
    client = TestClient(create_app(explorer, hosts=hosts), base_url="http://127.0.0.1:8000")
    body = _png(_scene())
    assert client.post("/api/explain", content=body, headers={**RAW, "host": "evil.example.com"}).status_code == 400
    cross = client.post("/api/explain", content=body, headers={**RAW, "origin": "http://evil.example.com"})
    assert cross.status_code == 403
    assert explorer.model_runs == 0  # refused before the model ran
    assert client.post("/api/explain", content=body, headers=RAW).status_code == 200
    assert explorer.model_runs == 1
