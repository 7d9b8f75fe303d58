"""The seeds' experiment, offline: several networks on a single-object and a multi-object photo, through
the README's `camlens compare` command with the three bundled EfficientNet-Lite networks."""

from __future__ import annotations

import re

import pytest

from helpers import EXAMPLES

README = EXAMPLES.parent / "README.md"
BUNDLED = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
CATS = range(281, 288)


def _table(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_readme_compare_command_uses_the_bundled_networks():
    text = README.read_text(encoding="utf-8")
    command = next(line for line in text.splitlines() if line.startswith("camlens compare examples/"))
    assert "--networks " + ",".join(BUNDLED) in command
    assert "examples/cat.jpg" in command and "examples/two_cats.jpg" in command
    assert "no weights" not in text.split("### Several networks, one table")[1].split("\n## ")[0]


@pytest.mark.slow
def test_three_bundled_networks_on_both_photos_explain_a_cat(run, tmp_path):
    out = tmp_path / "compare"
    result = run(
        "compare", str(EXAMPLES / "cat.jpg"), str(EXAMPLES / "two_cats.jpg"),
        "--networks", ",".join(BUNDLED), "--output-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for stem in ("cat", "two_cats"):
        markdown = (out / f"{stem}-compare.md").read_text(encoding="utf-8")
        rows = _table(markdown)
        assert list(rows) == list(BUNDLED), markdown
        for network, cells in rows.items():
            assert not any(c == "n/a" or c.startswith("unavailable") for c in cells), (stem, network, cells)
            explained = next(c for c in cells if c.startswith("class "))
            class_id = int(re.match(r"class (\d+)", explained).group(1))
            assert class_id in CATS, (stem, network, explained)  # the top-1, explained by default
        assert (out / f"{stem}-compare.png").is_file()
