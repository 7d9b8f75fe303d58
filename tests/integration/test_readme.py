"""The README's newcomer walkthrough, run as written: the quick-start command and the photo-to-overlay
Python example, in a fresh folder next to the examples."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from helpers import EXAMPLES

README = EXAMPLES.parent / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_quick_start_prints_what_the_readme_shows(run, tmp_path):
    (tmp_path / "examples").symlink_to(EXAMPLES)
    command = next(b for b in _blocks("bash") if "camlens explain examples/cat.jpg" in b).split("&&")[-1].split()
    assert command[:3] == ["camlens", "explain", "examples/cat.jpg"]
    result = run(*command[1:], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = next(b for b in _blocks("text") if "Egyptian cat" in b).splitlines()
    printed = result.stdout.splitlines()
    for line in shown:
        if line.startswith("  ") and ("(class" in line or "explained:" in line or "guided rule" in line):
            assert line in printed, line
    assert len(list((tmp_path / "results").glob("cat-efficientnet_lite0-*.jpg"))) == 6


@pytest.mark.slow
def test_the_python_example_from_a_photo_runs(tmp_path):
    (tmp_path / "examples").symlink_to(EXAMPLES)
    code = next(b for b in _blocks("python") if "camlens.load_network()" in b)
    code = code.replace("camlens.show(result, images)", "figure = camlens.show(result, images)")
    code += "\nassert len(overlays) == 2 and overlays[0].shape == (300, 451, 3)\nassert len(figure.axes) == 10\n"
    env = {**os.environ, "MPLBACKEND": "Agg", "CAMLENS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "results").glob("*.jpg"))) == 2 * 6
