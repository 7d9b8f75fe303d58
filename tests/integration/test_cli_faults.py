"""Faults the command must survive with one complete line and the documented exit status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import EXAMPLES


def test_a_weight_file_holding_pickled_code_is_refused_in_one_complete_line(run, tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    bad = tmp_path / "evil.pt"
    torch.save({"weights": Payload()}, bad)
    out = tmp_path / "out"
    result = run("explain", str(EXAMPLES / "cat.jpg"), "--weight-path", str(bad), "--output-dir", str(out))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "evil.pt is not a plain weight file" in lines[0] and lines[0].endswith(
        "torch.save(model.state_dict(), FILE)"
    )
    assert "pickled code ran" not in result.stdout + result.stderr and not out.exists()


def test_a_factory_that_raises_and_a_name_too_long_are_input_errors(run, tmp_path):
    factory = tmp_path / "model.py"
    factory.write_text("def net():\n    raise RuntimeError('no such checkpoint')\n")
    result = run("explain", str(EXAMPLES / "cat.jpg"), "--model", f"{factory}:net", "--output-dir", str(tmp_path / "o"))
    assert result.returncode == 2 and "raised RuntimeError: no such checkpoint" in result.stderr, result.stderr
    result = run("explain", str(EXAMPLES / "cat.jpg"), "--output-dir", str(tmp_path / ("x" * 300)))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "CAMLENS_OFFLINE": "1"}
    exe = Path(sys.executable).with_name("camlens")
    return subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_ctrl_c_during_start_up_prints_no_traceback(tmp_path):
    process = _start(["explain", str(EXAMPLES / "cat.jpg"), "--output-dir", str(tmp_path / "out")], tmp_path)
    time.sleep(0.7)  # importing torch
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert "Traceback" not in stderr, stderr
    assert process.returncode in (130, 0), (process.returncode, stderr)  # 0 only if it finished first
    if process.returncode == 130:
        assert stderr.strip().splitlines()[-1] == "camlens: interrupted"


@pytest.mark.slow
def test_sigterm_while_writing_cleans_up(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    data = (EXAMPLES / "cat.jpg").read_bytes()
    for i in range(24):
        (folder / f"im{i:02d}.jpg").write_bytes(data)
    out = tmp_path / "out"
    process = _start(["explain", str(folder), "--batch-size", "2", "--output-dir", str(out)], tmp_path)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "results.jsonl").exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143 and "Traceback" not in stderr, (process.returncode, stderr)
    # no half-written file and no staging folder; the resume journal stays for the next run, which deletes it
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".part") or p.name.startswith(".camlens-")]
    assert leftovers == [] or leftovers == [".camlens-started.jsonl"], leftovers
    rows = (out / "results.jsonl").read_text().splitlines()
    assert 0 < len(rows) < 24
    for picture in out.glob("*.jpg"):
        from PIL import Image

        Image.open(picture).load()  # every file left is complete


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="the re-check needs SIGALRM (POSIX)")
def test_ctrl_c_inside_an_import_waits_for_the_import_to_finish(run, tmp_path):
    """A module interrupted half-way through its import is left broken (numpy: "cannot load module more than
    once per process"; some extensions abort): the interrupt is raised once the import is done."""
    marker = tmp_path / "imported-to-the-end"
    factory = tmp_path / "slow.py"
    factory.write_text(
        "import os, signal, time\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(0.3)\n"
        f"open({str(marker)!r}, 'w').close()\n"
        "def net():\n    raise AssertionError('never reached')\n"
    )
    result = run("explain", str(EXAMPLES / "cat.jpg"), "--model", f"{factory}:net", "--output-dir", str(tmp_path / "o"))
    assert result.returncode == 130, (result.returncode, result.stderr)
    assert result.stderr.strip().splitlines()[-1] == "camlens: interrupted"
    assert marker.exists() and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()
