"""The JSON API of ``camlens serve`` through FastAPI's TestClient (no network, no browser).

Oracles: the maps the server sends for each of the top-k classes (one batched run) equal
:func:`camlens.explain` run on the image alone for that class, rescaled the same way; bad uploads get
the documented 4xx; concurrent requests on one model give the answers of sequential ones.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import camlens
from camlens.errors import UsageError
from camlens.images import read_image, to_batch
from camlens.postprocess import cam_to_image
from camlens.zoo import Network
from helpers import tiny_viewer_network

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install camlens[serve]")
from starlette.testclient import TestClient  # noqa: E402

from camlens.serve import create_app  # noqa: E402
from camlens.serve.explorer import VIEW_SIDE, Explorer, fit_side  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CAT = (ROOT / "examples" / "cat.jpg").read_bytes()


def _png_array(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def _encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _refuse(name: str) -> Network:
    raise UsageError(f"no weights for {name}: pass --weight-path FILE")


@pytest.fixture(scope="module")
def lite0_client():
    return TestClient(create_app(networks=[]))


@pytest.fixture
def tiny():
    explorer = Explorer(tiny_viewer_network(), ["elsewhere"], topk=3, max_upload_bytes=200_000, loader=_refuse)
    return explorer, TestClient(create_app(explorer))


@pytest.mark.slow
def test_topk_maps_equal_single_image_explain(lite0_client):
    answer = lite0_client.post("/api/explain?filename=cat.jpg", content=CAT)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    classes = [entry["class_id"] for entry in body["topk"]]
    assert classes[0] == 285 and len(classes) == 5
    assert body["layer"] == body["default_layer"] == "bn2"
    runs = lite0_client.get("/api/health").json()["model_runs"]

    network = lite0_client.app.state.explorer.network(None)
    rgb = read_image(ROOT / "examples" / "cat.jpg")
    x = to_batch([rgb], network.input_size, network.mean, network.std)
    size = fit_side(rgb.shape[:2], VIEW_SIDE)
    assert body["size"] == [size[1], size[0]]
    for class_id in (classes[0], classes[2]):
        if str(class_id) in body["maps"]:
            maps = body["maps"][str(class_id)]
        else:  # from the kept run: no model run
            maps = lite0_client.get(f"/api/runs/{body['run_id']}/classes/{class_id}").json()["maps"]
        alone = camlens.explain(network.model, x, ["gradcam", "gradcam++"], targets=class_id)
        for method in ("gradcam", "gradcam++"):
            expected = cam_to_image(alone.raw[method].float(), size)[0].numpy() * 255.0
            sent = _png_array(maps[method]["png"]).astype(np.float64)
            assert sent.shape == size
            assert np.abs(sent - expected).max() <= 1.0, (class_id, method)
        assert _png_array(maps["guided_backprop"]["png"]).shape == (*size, 3)
    assert lite0_client.get("/api/health").json()["model_runs"] == runs


@pytest.mark.slow
def test_reuse_upload_with_other_layer_and_counterfactual(lite0_client):
    first = lite0_client.post("/api/explain?methods=gradcam", content=CAT).json()
    again = lite0_client.post(
        f"/api/explain?image_id={first['image_id']}&methods=gradcam&layer=blocks.5&counterfactual=true"
    ).json()
    assert again["image_id"] == first["image_id"] and again["layer"] == "blocks.5" and again["counterfactual"]
    assert again["topk"] == first["topk"]
    assert list(again["maps"]["285"]) == ["gradcam"]
    layers = lite0_client.get("/api/layers").json()
    assert "blocks.5" in layers["layers"] and layers["default"] == "bn2"
    assert "global_pool.pool" not in layers["layers"]  # 1 x 1 maps are not offered


def test_bad_uploads_get_4xx_and_the_server_keeps_serving(tiny):
    explorer, client = tiny
    huge = _encoded(Image.new("1", (10_000, 10_000)))  # 100 megapixels in a few kB
    truncated = CAT[:3000]
    cases = [
        (b"%PDF-1.4 not a picture", {"filename": "notes.pdf"}, 415, "notes.pdf is not an image"),
        (truncated, {"filename": "cut.jpg"}, 422, "cut.jpg is damaged or truncated"),
        (huge, {"filename": "huge.png"}, 413, "10000 x 10000 pixels"),
        (b"\0" * 300_000, {}, 413, "too large"),
        (b"", {}, 400, "no image"),
        (b"", {"image_id": "0123"}, 404, "upload it again"),
        (b"", {"example": "nope.jpg"}, 404, "no example named"),
        (CAT, {"methods": "gradcam,bogus"}, 422, "unknown method"),
        (CAT, {"layer": "fc.nothing"}, 422, "no spatial layer named"),
        (CAT, {"network": "vgg99"}, 404, "unknown network"),
        (CAT, {"network": "elsewhere"}, 409, "no weights for elsewhere"),
        (CAT, {"topk": 0}, 422, "topk must be between"),
    ]
    for body, params, status, words in cases:
        answer = client.post("/api/explain", content=body, params=params)
        assert answer.status_code == status, (params, answer.text)
        assert words in answer.json()["detail"], (words, answer.json())
    form = client.post("/api/explain", files={"image": ("cat.jpg", CAT, "image/jpeg")})
    assert form.status_code == 415 and "not as a form" in form.json()["detail"]
    assert client.get("/api/runs/none/classes/1").status_code == 404
    assert explorer.model_runs == 0 and len(explorer.uploads) == 0
    good = client.post("/api/explain", content=_encoded(Image.new("RGB", (40, 30), "blue")))
    assert good.status_code == 200 and explorer.model_runs == 1
    assert client.get("/api/health").json() == {
        "status": "ok",
        "model_runs": 1,
        "metric_runs": 0,
        "cached_images": 1,
        "cached_runs": 1,
    }
    other = good.json()["topk"][1]["class_id"]
    assert client.get(f"/api/runs/{good.json()['run_id']}/classes/{other}").status_code == 200
    missing = next(c for c in range(6) if c not in [e["class_id"] for e in good.json()["topk"]])
    assert client.get(f"/api/runs/{good.json()['run_id']}/classes/{missing}").status_code == 404
    assert explorer.model_runs == 1


def test_concurrent_requests_answer_as_sequential_ones(tiny):
    explorer, client = tiny
    rng = np.random.default_rng(0)
    images = [_encoded(Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))) for _ in range(4)]
    sequential = [client.post("/api/explain?all_classes=true", content=data).json() for data in images]
    answers: dict[int, dict] = {}

    def ask(i: int) -> None:
        for _ in range(2):
            answers[i] = client.post("/api/explain?all_classes=true", content=images[i % 4]).json()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert explorer.model_runs == 4 + 16
    for i, answer in answers.items():
        expected = sequential[i % 4]
        assert answer["topk"] == expected["topk"]
        assert answer["maps"] == expected["maps"]  # the PNG bytes, map for map


def test_page_and_static_files_are_local(tiny):
    _, client = tiny
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        text = client.get(f"/static/{name}").text
        assert "http://" not in text and "https://" not in text  # nothing from outside the server
    schema = client.get("/openapi.json").json()
    assert "/api/explain" in schema["paths"] and "/api/runs/{run_id}/classes/{class_id}" in schema["paths"]
    options = client.get("/api/options").json()
    assert options["methods"] == camlens.available_methods()
    assert options["networks"][1] == {"name": "elsewhere", "loaded": False, "unavailable": None,
                                      "prompts": None, "detector": None}
    from camlens.viz.annotate import colorize

    assert options["colormaps"]["viridis"][128] == colorize(np.array(128 / 255), "viridis").tolist()


def test_import_is_lazy_and_a_missing_extra_names_the_install():
    code = (
        "import sys; import camlens.serve; assert 'fastapi' not in sys.modules and 'uvicorn' not in sys.modules\n"
        "sys.modules['fastapi'] = None\n"
        "from camlens.cli.serve import main\n"
        "sys.exit(main(['--port', '8123']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "camlens: error: camlens serve needs FastAPI and uvicorn (fastapi is not installed): pip install camlens[serve]"
    ]


def test_camlens_serve_command_is_wired():
    import importlib

    cli = importlib.import_module("camlens.cli.main")
    args = cli.build_parser().parse_args(["serve", "--port", "8123", "--topk", "3", "--offline"])
    assert (args.port, args.topk, args.offline, args.host) == (8123, 3, True, "127.0.0.1")
    assert cli.main(["serve", "--port", "70000"]) == 2  # refused before any model loads


HAS_METRICS = importlib.util.find_spec("camlens.metrics") is not None


@pytest.mark.skipif(HAS_METRICS, reason="camlens.metrics is present: the panel works (next test)")
def test_faithfulness_without_metrics_says_so(tiny):
    explorer, client = tiny
    body = client.post("/api/explain", content=_encoded(Image.new("RGB", (40, 30), "blue"))).json()
    assert client.get("/api/options").json()["faithfulness"] is False
    answer = client.get(f"/api/runs/{body['run_id']}/classes/{body['topk'][0]['class_id']}/faithfulness")
    assert answer.status_code == 501 and "camlens.metrics" in answer.json()["detail"]


@pytest.mark.skipif(not HAS_METRICS, reason="camlens.metrics is not part of this camlens")
def test_faithfulness_curves_are_the_metrics_of_the_kept_maps(tiny):
    import camlens.metrics as cm

    explorer, client = tiny
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    methods = {"methods": "gradcam,gradcam++,guided_backprop"}  # encoded: a bare "+" in a URL is a space
    body = client.post("/api/explain", params=methods, content=_encoded(image)).json()
    class_id = body["topk"][1]["class_id"]
    answer = client.get(f"/api/runs/{body['run_id']}/classes/{class_id}/faithfulness?steps=8")
    assert answer.status_code == 200, answer.text
    curves = answer.json()
    assert list(curves["deletion"]["auc"]) == ["gradcam", "gradcam++"]  # (H, W) maps only
    network = explorer.network(None)
    upload = explorer.upload(body["image_id"])
    x = to_batch([upload.rgb], network.input_size, network.mean, network.std)
    alone = camlens.explain(network.model, x, ["gradcam++"], targets=class_id)["gradcam++"]
    expected = cm.insertion(network.model, x, alone, [class_id], steps=8)
    assert curves["insertion"]["auc"]["gradcam++"] == pytest.approx(float(expected.values[0]), abs=1e-5)
    assert curves["insertion"]["curve"]["gradcam++"] == pytest.approx(expected.curve[0].tolist(), abs=1e-5)
    assert curves["fractions"] == pytest.approx(expected.fractions.tolist())
    health = client.get("/api/health").json()
    assert (health["model_runs"], health["metric_runs"]) == (1, 1)


def test_each_class_carries_what_explain_noted_about_its_maps():
    """Class 0 reads brightness above 0.5 with weight +1, class 1 with -1: on a bright image class 1's
    signed Grad-CAM is negative everywhere, so its shown map is zero: the answer says so for that class only."""
    model = nn.Sequential(nn.Conv2d(3, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2)).eval()
    with torch.no_grad():
        model[0].weight.fill_(1 / 3)
        model[0].bias.fill_(-0.5)
        model[3].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model[3].bias.zero_()
    network = Network("bright", model, (16, 16), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), labels=["light", "dark"])
    explorer = Explorer(network, [], topk=2, max_upload_bytes=200_000, loader=_refuse)
    client = TestClient(create_app(explorer))
    rng = np.random.default_rng(0)
    bright = _encoded(Image.fromarray(rng.integers(180, 255, (20, 20, 3), dtype=np.uint8)))
    with pytest.warns(UserWarning, match="zero everywhere"):
        answer = client.post("/api/explain?filename=bright.png&methods=gradcam", content=bright)
    assert answer.status_code == 200, answer.text
    notes = {entry["class_id"]: entry["notes"] for entry in answer.json()["topk"]}
    assert notes[0] == []
    assert len(notes[1]) == 1 and "gradcam: the map at layer '0' is zero everywhere for this image" in notes[1][0]
