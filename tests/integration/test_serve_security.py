"""The viewer's defences: Host names (DNS rebinding), cross-origin writes, body types, framing, example
symlinks, memory over many requests, and a quiet, 130-on-Ctrl-C command line."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import tiny_viewer_network

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from camlens.serve import create_app  # noqa: E402
from camlens.serve.explorer import Explorer  # noqa: E402
from camlens.serve.guard import allowed_hosts  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RAW = {"content-type": "application/octet-stream"}


def _jpeg(seed: int, size: tuple[int, int] = (48, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def tiny():
    explorer = Explorer(tiny_viewer_network(), [], topk=3)
    return explorer, TestClient(create_app(explorer))


# ------------------------------------------------------------------------------------------ 1. Host
def test_only_the_bound_host_names_are_served():
    hosts = allowed_hosts("127.0.0.1", 8000, ["viewer.lan"])
    assert set(hosts) == {"127.0.0.1:8000", "localhost:8000", "[::1]:8000", "viewer.lan:8000"}
    assert "[::1]:9000" in allowed_hosts("::1", 9000) and "10.0.0.5:80" in allowed_hosts("10.0.0.5", 80)
    client = TestClient(create_app(Explorer(tiny_viewer_network(), []), hosts=hosts), base_url="http://127.0.0.1:8000")
    for host in hosts:
        assert client.get("/api/health", headers={"host": host}).status_code == 200, host
    for host in ("evil.example.com", "evil.example.com:8000", "localhost:9999", "127.0.0.1", "rebind.attacker:8000"):
        answer = client.get("/", headers={"host": host})
        assert answer.status_code == 400, host
        detail = answer.json()["detail"]
        assert "\n" not in detail and "is not served here" in detail and "--allowed-host" in detail


# ------------------------------------------------------------------------------------------ 2. Origin, body type
def test_cross_origin_writes_are_refused_before_the_model_runs(tiny):
    explorer, client = tiny
    image = _jpeg(0)
    refused = [
        ({"origin": "http://evil.example.com", "content-type": "text/plain"}, 403),
        ({"origin": "http://evil.example.com", **RAW}, 403),
        ({"origin": "null", **RAW}, 403),
        ({"sec-fetch-site": "cross-site", **RAW}, 403),
        ({"sec-fetch-site": "same-site", **RAW}, 403),
        ({"content-type": "text/plain"}, 415),
        ({"content-type": "text/plain;charset=UTF-8", "origin": "http://testserver"}, 415),
        ({"content-type": "application/x-www-form-urlencoded"}, 415),
    ]
    for headers, status in refused:
        answer = client.post("/api/explain", content=image, headers=headers)
        assert answer.status_code == status, (headers, answer.text)
        assert "\n" not in answer.json()["detail"]
    assert explorer.model_runs == 0 and len(explorer.uploads) == 0
    # what the page sends (same origin), and a script without Origin
    page = {"origin": "http://testserver", "sec-fetch-site": "same-origin", **RAW}
    run = client.post("/api/explain", content=image, headers=page)
    assert run.status_code == 200, run.text
    assert client.post("/api/explain", content=image, headers={"content-type": "image/jpeg"}).status_code == 200
    assert client.post("/api/explain", content=image).status_code == 200  # no type declared (httpx, scripts)
    assert explorer.model_runs == 3
    other = run.json()["topk"][1]["class_id"]
    path = f"/api/runs/{run.json()['run_id']}/classes/{other}"
    assert client.get(path, headers={"sec-fetch-site": "cross-site"}).status_code == 403
    assert client.get(path, headers={"sec-fetch-site": "same-origin"}).status_code == 200


# ------------------------------------------------------------------------------------------ 3. framing, sniffing
def test_no_framing_no_sniffing_and_the_page_fits_its_policy(tiny):
    _, client = tiny
    for path in ("/", "/static/app.js", "/api/health", "/api/examples/nope.jpg"):
        headers = client.get(path).headers
        assert headers["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert "script-src 'self'" in headers["content-security-policy"], path
        assert headers["x-content-type-options"] == "nosniff", path
    assert client.get("/", headers={"host": "x"}).headers["x-frame-options"] == "DENY"
    # the policy allows no inline script or style: the page has none
    page = (ROOT / "src" / "camlens" / "serve" / "static" / "index.html").read_text()
    assert "<style" not in page and " style=" not in page and " on" not in page.replace("\n", " ").split("<body")[0]
    assert all("src=" in tag.split(">")[0] for tag in page.split("<script")[1:])


# ------------------------------------------------------------------------------------------ 4. example symlinks
def test_examples_refuse_symlinks_and_paths_outside(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.jpg"
    secret.write_bytes(_jpeg(1))
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "real.jpg").write_bytes(_jpeg(2))
    (examples / "link.jpg").symlink_to(secret)
    (examples / "up.jpg").symlink_to(Path("..") / "outside" / "secret.jpg")
    explorer = Explorer(tiny_viewer_network(), [], topk=2, examples_dir=examples)
    client = TestClient(create_app(explorer))
    assert client.get("/api/options").json()["examples"] == ["real.jpg"]
    assert client.get("/api/examples/real.jpg").content == (examples / "real.jpg").read_bytes()
    for name in ("link.jpg", "up.jpg", "..%2Foutside%2Fsecret.jpg", "secret.jpg"):
        assert client.get(f"/api/examples/{name}").status_code == 404, name
        assert client.post(f"/api/explain?example={name}").status_code == 404, name
    assert explorer.model_runs == 0


# ------------------------------------------------------------------------------------------ 5. memory
def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_resident_memory_stays_bounded_over_300_requests():
    """As the page uses it: each upload explained, then its other classes fetched concurrently."""
    explorer = Explorer(tiny_viewer_network(), [], topk=5)
    client = TestClient(create_app(explorer))
    images = [_jpeg(i, (768, 1024)) for i in range(8)]

    def one(i: int) -> None:
        body = client.post("/api/explain", content=images[i % 8], headers=RAW).json()
        paths = [f"/api/runs/{body['run_id']}/classes/{e['class_id']}" for e in body["topk"][1:]]
        threads = [threading.Thread(target=client.get, args=(p,)) for p in paths]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    for i in range(10):  # warm-up: torch sets itself up (the caches, 16 images and 32 runs, fill later)
        one(i)
    start = _rss_mb()
    for i in range(10, 300):
        one(i)
    grown = _rss_mb() - start
    print(f"resident memory: {start:.0f} MB after warm-up, {start + grown:.0f} MB after 300 requests")
    assert explorer.model_runs == 300
    # the full caches hold about 150 MB here; a pool of threads, each with its own malloc arena, held 600 more
    assert grown < 300, f"resident memory grew by {grown:.0f} MB over 290 requests after warm-up"


# ------------------------------------------------------------------------------------------ 6. the command line
TINY_MODEL = """
import torch
from torch import nn

def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4)).eval()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hang_up(port: int, request: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
    # closed before the answer (or before the whole body) arrives


def test_serve_is_quiet_about_hang_ups_checks_hosts_and_exits_130_on_ctrl_c(tmp_path):
    (tmp_path / "tiny.py").write_text(TINY_MODEL)
    port = _free_port()
    env = {**os.environ, "CAMLENS_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-c", "import sys; from camlens.cli.main import main; sys.exit(main())"]
    process = subprocess.Popen(
        [*command, "serve", "--port", str(port), "--model", f"{tmp_path / 'tiny.py'}:net", "--input-size", "32"]
        + ["--networks", "", "--topk", "2", "--allowed-host", "viewer.lan"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.communicate()
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=5) as answer:
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not answer within 90 s"
                time.sleep(0.2)

        def status(host: str) -> int:
            request = urllib.request.Request(f"{url}/api/health", headers={"Host": host})
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    return answer.status
            except urllib.error.HTTPError as error:
                return error.code

        assert status(f"localhost:{port}") == status(f"viewer.lan:{port}") == 200
        assert status("evil.example.com") == status(f"evil.example.com:{port}") == 400

        image = _jpeg(3)
        head = f"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/octet-stream\r\n"
        for _ in range(3):
            _hang_up(port, f"{head}Content-Length: {len(image) + 5000}\r\n\r\n".encode() + image)  # body cut short
            _hang_up(port, f"{head}Content-Length: {len(image)}\r\n\r\n".encode() + image)  # gone before the answer
        time.sleep(1.5)
        with urllib.request.urlopen(f"{url}/api/health", timeout=10) as answer:
            assert json.loads(answer.read())["status"] == "ok"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
    assert process.returncode == 130, (process.returncode, err)
    assert "Traceback" not in err and "Exception in ASGI" not in err, err
    assert len(err.strip().splitlines()) <= 1, err  # at most "camlens: interrupted"


def test_python_m_camlens_serve_exits_130_on_ctrl_c(tmp_path):
    (tmp_path / "tiny.py").write_text(TINY_MODEL)
    port = _free_port()
    env = {**os.environ, "CAMLENS_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "camlens.serve", "--port", str(port), "--model", f"{tmp_path / 'tiny.py'}:net"]
        + ["--input-size", "32", "--networks", "", "--topk", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.communicate()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not answer within 90 s"
                time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
    assert process.returncode == 130, (process.returncode, err)
    assert err.strip() == "camlens: interrupted", err
