"""``camlens serve --model FILE.py:FACTORY`` with a detector, in headless Chromium: the boxes are listed and
drawn on every map, the selected one highlighted, and a click on a map selects the box under it (the
smallest that holds the point) without running the model again.

The detector is :class:`camlens.synthetic.TinyCenterNet` with seeded random weights and its adapter, returned
as ``(model, adapter)`` by a factory file written here; the image a 48 x 48 scene of squares.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from camlens.synthetic import square_scenes
from integration.test_serve_browser import CHROMIUM, _get, browsing, running

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run does)"),
]

FACTORY = """
import torch
from camlens.synthetic import TinyCenterNet, square_adapter

def detector():
    torch.manual_seed(3)
    return TinyCenterNet().eval(), square_adapter()
"""

PIXEL = """([x, y]) => {
  const canvas = document.querySelector('#grid figure[data-kind=heatmap] canvas');
  return [...canvas.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3)];
}"""

CENTRE = """([x, y]) => {
  const canvas = document.querySelector('#grid figure[data-kind=overlay] canvas');
  const rect = canvas.getBoundingClientRect();
  return [rect.left + (x * rect.width) / canvas.width, rect.top + (y * rect.height) / canvas.height];
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detector")
    (folder / "detector.py").write_text(FACTORY)
    yield from running(["--model", f"{folder / 'detector.py'}:detector", "--networks", ""])


@pytest.fixture(scope="module")
def page(server):
    yield from browsing(server, "#box-options:not([hidden])")


def _under(boxes: list[dict], x: float, y: float) -> int:
    """The smallest box holding (x, y), the first of equal ones: the box a click there selects."""
    holding = [
        b for b in boxes if b["view_box"][0] <= x <= b["view_box"][2] and b["view_box"][1] <= y <= b["view_box"][3]
    ]
    return min(holding, key=lambda b: (b["view_box"][2] - b["view_box"][0]) * (b["view_box"][3] - b["view_box"][1]))[
        "class_id"
    ]


def test_boxes_are_drawn_and_a_click_selects_one(server, page, tmp_path):
    images, _ = square_scenes(1, torch.Generator().manual_seed(5))
    file = tmp_path / "squares.png"
    Image.fromarray((images[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(file)
    page.fill("#score-threshold", "0.3")
    page.eval_on_selector("#score-threshold", "el => el.blur()")  # its change event, before there is a run
    page.set_input_files("#file", str(file))
    page.wait_for_function("() => window.camlens.run && !window.camlens.busy")
    assert "error" not in (page.get_attribute("#message", "class") or ""), page.text_content("#message")
    run = page.evaluate("() => window.camlens.run")
    assert run["detector"] and len(run["topk"]) >= 2
    chips = page.eval_on_selector_all("#chips .chip", "chips => chips.map(c => Number(c.dataset.box))")
    assert chips == [e["class_id"] for e in run["topk"]]
    assert page.get_attribute("#chips .chip.selected", "data-box") == "0"
    runs = _get(f"{server}/api/health")["model_runs"]

    def left_edge(box: dict) -> list[int]:
        x1, y1, _, y2 = box["view_box"]
        return page.evaluate(PIXEL, [round(x1), round((y1 + y2) / 2)])

    assert left_edge(run["topk"][0]) == [255, 212, 0]  # the selected box is outlined in yellow
    # a box whose centre selects it (not the one selected now), clicked on the overlay
    target = next(
        b for b in run["topk"][1:]
        if _under(run["topk"], (b["view_box"][0] + b["view_box"][2]) / 2, (b["view_box"][1] + b["view_box"][3]) / 2)
        == b["class_id"]
    )  # fmt: skip
    x, y = page.evaluate(CENTRE, [(target["view_box"][0] + target["view_box"][2]) / 2,
                                  (target["view_box"][1] + target["view_box"][3]) / 2])  # fmt: skip
    page.mouse.click(x, y)
    page.wait_for_selector(f"#chips .chip.selected[data-box='{target['class_id']}']")
    page.wait_for_function(f"() => window.camlens.classId === {target['class_id']}")
    assert left_edge(target) == [255, 212, 0]
    # and from the list
    page.click("#chips .chip[data-box='0']")
    page.wait_for_selector("#chips .chip.selected[data-box='0']")
    assert left_edge(run["topk"][0]) == [255, 212, 0]
    assert _get(f"{server}/api/health")["model_runs"] == runs, "choosing a box ran the model"
