"""``camlens serve`` in a real browser: Debian's headless Chromium driven by Playwright.

The server runs in a subprocess (``python -m camlens.serve``) on a free localhost port with the bundled
EfficientNet-Lite0. The test uploads ``examples/cat.jpg``, finds class 285 among the chips, checks that
every map's canvas holds a real picture, changes the class, the opacity and the colour map without a new
model run (the server's counter), uploads a file that is not an image and reads the page's message,
and saves the screenshot the README shows.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
# the README's screenshot is rewritten only on request (CAMLENS_UPDATE_DOCS=1); otherwise it goes to a temp dir
SCREENSHOT = ROOT / "docs" / "serve" / "screenshot.png"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run does)"),
]

# Per canvas: its size, and the standard deviation and mean of its RGB values (a blank canvas has std 0).
CANVAS_STATS = """() => [...document.querySelectorAll('#grid figure')].map((card) => {
  const canvas = card.querySelector('canvas');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0, sq = 0, n = 0;
  for (let p = 0; p < data.length; p += 4) {
    for (let c = 0; c < 3; c++) { sum += data[p + c]; sq += data[p + c] ** 2; n++; }
  }
  const mean = sum / n;
  let hash = 0;
  for (let p = 0; p < data.length; p += 97) hash = (hash * 31 + data[p]) >>> 0;
  return {title: card.querySelector('h2').textContent, kind: card.dataset.kind, width: canvas.width,
          height: canvas.height, mean, std: Math.sqrt(Math.max(0, sq / n - mean * mean)), hash};
})"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server():
    yield from running(["--examples", str(ROOT / "examples")])


def running(options: list[str]):
    """A ``python -m camlens.serve`` subprocess with ``options`` on a free port: yields its URL, then stops it."""
    port = _free_port()
    env = {
        **os.environ,
        "CAMLENS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "camlens.serve", "--port", str(port), *options],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with status {process.returncode}: {process.stdout.read()}")
            try:
                if _get(f"{url}/api/health")["status"] == "ok":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the server did not answer within 120 s")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def page(server):
    yield from browsing(server, "#examples button")


def browsing(server: str, ready: str):
    """A headless Chromium page on ``server``, once ``ready`` (a selector) is there; no JavaScript errors."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 940})
            page.set_default_timeout(120_000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server)
            page.wait_for_selector(ready)
            yield page
            assert not errors, f"JavaScript errors on the page: {errors}"
        finally:
            browser.close()


def _wait_ready(page) -> None:
    page.wait_for_function("() => document.body.dataset.state !== 'busy' && !window.camlens.busy")


def test_upload_explain_switch_class_opacity_and_bad_file(server, page, capsys, tmp_path_factory):
    page.set_input_files("#file", str(ROOT / "examples" / "cat.jpg"))
    page.wait_for_function("() => window.camlens.run && window.camlens.timing.uploadToFirstOverlay")
    _wait_ready(page)
    assert "error" not in (page.get_attribute("#message", "class") or ""), page.text_content("#message")
    seconds = page.evaluate("() => window.camlens.timing")
    with capsys.disabled():
        print(
            f"\ncamlens serve, cat.jpg, CPU: upload to first overlay {seconds['uploadToFirstOverlay']:.2f} s "
            f"(model {seconds['model']:.2f} s)"
        )

    chips = page.eval_on_selector_all("#chips .chip", "chips => chips.map(c => Number(c.dataset.class))")
    assert 285 in chips, chips  # Egyptian cat
    assert page.get_attribute("#chips .chip.selected", "data-class") == str(chips[0])

    stats = page.evaluate(CANVAS_STATS)
    titles = [s["title"] for s in stats]
    for wanted in ["heatmap", "Grad-CAM", "heatmap++", "Grad-CAM++", "guided backprop", "Guided Grad-CAM"]:
        assert wanted in titles, titles
    for s in stats:  # every picture drawn, at the maps' size, and not blank
        assert s["width"] == 384 and s["height"] == 255, s
        assert s["std"] > 8, s
    runs = _get(f"{server}/api/health")["model_runs"]
    assert runs == 1

    # Another class: other maps, from the kept run.
    before = {s["title"]: s["hash"] for s in stats}
    other = next(c for c in chips if c != chips[0])
    page.click(f"#chips .chip[data-class='{other}']")
    page.wait_for_selector(f"#chips .chip.selected[data-class='{other}']")
    after = {s["title"]: s for s in page.evaluate(CANVAS_STATS)}
    assert after["Grad-CAM"]["hash"] != before["Grad-CAM"], "the class changed but the overlay did not"

    # Opacity and colour map: redrawn in the page.
    drawn = int(page.get_attribute("body", "data-drawn"))
    page.eval_on_selector("#opacity", "el => { el.value = 90; el.dispatchEvent(new Event('input')); }")
    page.wait_for_function(f"() => Number(document.body.dataset.drawn) > {drawn}")
    stronger = {s["title"]: s for s in page.evaluate(CANVAS_STATS)}
    assert stronger["Grad-CAM"]["hash"] != after["Grad-CAM"]["hash"]
    assert stronger["heatmap"]["hash"] == after["heatmap"]["hash"]  # opacity touches overlays only
    page.select_option("#colormap", "inferno")
    page.wait_for_function(f"() => Number(document.body.dataset.drawn) > {drawn + 1}")
    hot = {s["title"]: s for s in page.evaluate(CANVAS_STATS)}
    assert hot["heatmap"]["hash"] != stronger["heatmap"]["hash"]
    assert _get(f"{server}/api/health")["model_runs"] == runs, "changing class, opacity or colour map ran the model"

    # The view the README shows: class 285, half opacity, jet.
    page.click("#chips .chip[data-class='285']")
    page.wait_for_selector("#chips .chip.selected[data-class='285']")
    page.eval_on_selector("#opacity", "el => { el.value = 50; el.dispatchEvent(new Event('input')); }")
    page.select_option("#colormap", "jet")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOT if os.environ.get("CAMLENS_UPDATE_DOCS") else tmp_path_factory.mktemp("shot") / "shot.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000
    assert _get(f"{server}/api/health")["model_runs"] == runs

    # Downloads: one map (named as the CLI names it) and the view as the compare table.
    with page.expect_download() as download:
        page.click("#grid figure[data-suffix='cam'] button")
    assert download.value.suggested_filename == "cat-class285-efficientnet_lite0-cam.png"
    with Image.open(download.value.path()) as picture:
        assert picture.size == (384, 255)
    with page.expect_download() as download:
        page.click("#save-png")
    assert download.value.suggested_filename == "cat-class285-efficientnet_lite0-compare.png"
    with Image.open(download.value.path()) as table:
        assert table.size == (220 + 7 * 164 + 4, 28 + 168)  # label column, original + six pictures
    with page.expect_download() as download:
        page.click("#save-html")
    report = Path(download.value.path()).read_text(encoding="utf-8")
    assert "explained: class 285 (Egyptian cat)" in report and report.count("<img") == 7

    # The faithfulness panel, where camlens has the metrics.
    if page.evaluate("() => window.camlens.options.faithfulness"):
        page.click("#faith-run")
        page.wait_for_selector("#faith-charts canvas[data-metric='insertion']")
        assert page.eval_on_selector_all("#faith-charts canvas", "c => c.length") == 2
        assert _get(f"{server}/api/health")["metric_runs"] == 1

    # A file that is not an image: a clear message, and the server keeps serving.
    page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture"}])
    page.wait_for_selector("#message.error")
    message = page.text_content("#message")
    assert "notes.txt is not an image" in message, message
    assert _get(f"{server}/api/health")["status"] == "ok"

    # An example, picked on the page.
    page.click("#examples button[data-example='cat_and_cup.jpg']")
    page.wait_for_function("() => window.camlens.run && window.camlens.run.image_name === 'cat_and_cup.jpg'")
    _wait_ready(page)
    assert page.eval_on_selector_all("#chips .chip", "chips => chips.length") == 5
    assert _get(f"{server}/api/health")["model_runs"] == runs + 1
