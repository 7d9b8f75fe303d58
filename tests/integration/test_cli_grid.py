"""camlens explain --grid: one figure of images x methods, as PNG, SVG and PDF."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from helpers import EXAMPLES

pytest.importorskip("matplotlib")


@pytest.mark.slow
def test_explain_grid_writes_png_svg_pdf_and_bad_values_are_one_line(run, tmp_path):
    out = tmp_path / "out"
    result = run(
        "explain", str(EXAMPLES / "cat.jpg"), str(EXAMPLES / "cat_and_cup.jpg"), "--methods", "gradcam",
        "guided_backprop", "--output-dir", str(out), "--grid",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"grid: {out / 'grid.png'}, {out / 'grid.svg'}, {out / 'grid.pdf'}" in result.stdout
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "grid.pdf").read_bytes()[:5] == b"%PDF-"
    svg = ET.parse(out / "grid.svg").getroot()
    cells = [e for e in svg.iter() if e.get("id", "").startswith("camlens-cell-")]
    assert len(cells) == 2 * 2
    text = (out / "grid.svg").read_text()
    assert "efficientnet_lite0" in text and "--help" not in text

    bad = run("explain", str(EXAMPLES / "cat.jpg"), "--output-dir", str(tmp_path / "o2"), "--grid", "gif")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--grid takes formats (png,svg,pdf)" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    help_text = run("explain", "--help").stdout
    assert "--grid" in help_text and "grid.png" in help_text
