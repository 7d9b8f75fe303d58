"""``camlens serve`` with an image-text model: each prompt of ``/api/explain?prompt=...`` is a "class".

Oracle: the scores, probabilities and maps the server sends equal :func:`camlens.explain_text` on the same
decoded image (the cosines; the softmax of CLIP's logits over the prompts; the maps rescaled as the viewer
rescales a class's), from one model run for all prompts; bad prompt requests get a 422 naming the problem.
A tiny CLIP of :mod:`camlens.synthetic` (trained for a few steps: the maps must not be flat).
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from camlens.images import to_batch
from camlens.postprocess import cam_to_image
from camlens.synthetic import tokenize, trained_clip, two_patches
from camlens.text import explain_text, similarity_scale
from camlens.zoo import Network
from helpers import tiny_viewer_network

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install camlens[serve]")
from starlette.testclient import TestClient  # noqa: E402

from camlens.serve import create_app  # noqa: E402
from camlens.serve.explorer import MAX_PROMPTS, Explorer  # noqa: E402


def _png_array(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


@pytest.fixture(scope="module")
def clip_network() -> Network:
    return Network("tiny-clip", trained_clip(steps=60), (32, 32), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), tokenizer=tokenize)


@pytest.fixture(scope="module")
def photo() -> tuple[bytes, np.ndarray]:
    images, _, _, _ = two_patches(1, seed=7)
    rgb = (images[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue(), rgb


@pytest.fixture()
def client(clip_network):
    explorer = Explorer(clip_network, [tiny_viewer_network().name], topk=3, loader=lambda _name: tiny_viewer_network())
    return TestClient(create_app(explorer))


def test_each_prompt_is_explained_as_explain_text_does_from_one_model_run(client, clip_network, photo):
    data, rgb = photo
    prompts = ["a red square", "blue", "a green square"]
    query = "&".join(f"prompt={p.replace(' ', '+')}" for p in prompts)
    answer = client.post(f"/api/explain?{query}&methods=gradcam,gradcam%2B%2B,guided_backprop", content=data)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["prompts"] == prompts
    assert [e["label"] for e in body["topk"]] == prompts and [e["class_id"] for e in body["topk"]] == [0, 1, 2]
    assert body["methods"] == ["gradcam", "gradcam++"]
    assert body["notes"] == ["not for image-text models, left out: guided_backprop"]
    assert client.get("/api/health").json()["model_runs"] == 1

    x = to_batch([rgb], clip_network.input_size, clip_network.mean, clip_network.std)
    alone = explain_text(clip_network.model, x, prompts, ["gradcam", "gradcam++"], tokenizer=tokenize)
    similarity = alone.similarity[0]
    np.testing.assert_allclose([e["score"] for e in body["topk"]], similarity.tolist(), atol=1e-5)
    expected_p = (similarity_scale(clip_network.model) * similarity).softmax(0)
    np.testing.assert_allclose([e["probability"] for e in body["topk"]], expected_p.tolist(), atol=1e-5)
    assert body["layer"] == alone.target_layer
    for t in range(len(prompts)):
        if str(t) in body["maps"]:
            maps = body["maps"][str(t)]
        else:  # from the kept run: no model run
            maps = client.get(f"/api/runs/{body['run_id']}/classes/{t}").json()["maps"]
        for method in ("gradcam", "gradcam++"):
            expected = cam_to_image(alone.raw[method][0, t : t + 1].float(), (32, 32))[0].numpy() * 255.0
            sent = _png_array(maps[method]["png"]).astype(np.float64)
            assert sent.shape == (32, 32)
            assert np.abs(sent - expected).max() <= 1.0, (t, method)
            assert sent.max() - sent.min() > 50, "a flat map tests nothing"
    assert client.get("/api/health").json()["model_runs"] == 1  # the other prompts came from the kept run


def test_prompt_requests_that_cannot_work_get_a_422_naming_the_problem(client, photo):
    data, _ = photo

    def refused(query: str) -> str:
        answer = client.post(f"/api/explain?{query}", content=data)
        assert answer.status_code == 422, (query, answer.text)
        return answer.json()["detail"]

    assert "give one or more prompts" in refused("methods=gradcam")
    assert "give one or more prompts" in refused("prompt=+++")
    assert f"at most {MAX_PROMPTS} prompts" in refused("&".join(f"prompt=red+{i}" for i in range(MAX_PROMPTS + 1)))
    assert "unknown word 'dog'" in refused("prompt=a+dog")
    assert "none of guided_backprop explains an image-text model" in refused("prompt=red&methods=guided_backprop")
    assert "unknown method 'gradcan'" in refused("prompt=red&methods=gradcan")
    assert "is not an image-text model" in refused("prompt=red&network=tiny")
    run = client.post("/api/explain?prompt=red", content=data).json()
    answer = client.get(f"/api/runs/{run['run_id']}/classes/0/faithfulness")
    assert answer.status_code == 422 and "not available for prompts" in answer.json()["detail"]
    assert client.get("/api/health").json()["model_runs"] == 1  # only the good request ran the model


def test_options_and_layers_say_which_network_takes_prompts(client):
    networks = {n["name"]: n for n in client.get("/api/options").json()["networks"]}
    assert networks["tiny-clip"]["prompts"] is True
    assert networks["tiny"]["prompts"] is None  # not loaded yet: not known
    clip = client.get("/api/layers").json()
    assert clip["prompts"] is True and clip["layers"] == []  # explain_text picks the tower's layer
    tiny = client.get("/api/layers?network=tiny").json()
    assert tiny["prompts"] is False and tiny["layers"]
    networks = {n["name"]: n for n in client.get("/api/options").json()["networks"]}
    assert networks["tiny"]["prompts"] is False
    assert "gscorecam" in client.get("/api/options").json()["text_methods"]


def test_warm_up_leaves_an_image_text_network_to_its_prompts(clip_network):
    explorer = Explorer(clip_network, [])
    explorer.warm_up()  # the tiny tokenizer knows only its colour words: no made-up prompt is run
    assert explorer.model_runs == 0
