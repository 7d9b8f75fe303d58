"""Progress of the long computations (perturbation methods, the sanity check) and their cost up front."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import camlens
from camlens.metrics import sanity_check
from camlens.progress import Progress, TqdmProgress, reporting

CHANNELS = 6


def tiny() -> nn.Module:
    """A hand-built model whose target layer ``"2"`` has ``CHANNELS`` channels (8 x 8 at 16 x 16 input)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, CHANNELS, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(CHANNELS, 3),
    ).eval()  # fmt: skip


class Recorder(Progress):
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)

    def update(self, label: str, done: int, total: int) -> None:
        self.calls.append((label, done, total))


def counts(calls: list[tuple[str, int, int]], label: str) -> tuple[list[int], set[int]]:
    mine = [(done, total) for name, done, total in calls if name == label]
    return [d for d, _ in mine], {t for _, t in mine}


def assert_counts_up_to(calls: list[tuple[str, int, int]], label: str, total: int) -> None:
    done, totals = counts(calls, label)
    assert totals == {total}, (label, totals)
    assert done[0] == 0 and done[-1] == total, (label, done)
    assert all(b > a for a, b in zip(done, done[1:], strict=False)), (label, done)


@pytest.mark.parametrize(
    ("method", "per_image"),
    [("scorecam", CHANNELS), ("ablationcam", CHANNELS), ("sscam", CHANNELS * 3), ("iscam", CHANNELS * 3),
     ("smoothgradcam++", 3)],
)  # fmt: skip
def test_a_perturbation_method_counts_its_forward_passes_up_to_the_total(method, per_image):
    model, x = tiny(), torch.rand(2, 3, 16, 16) + 0.1
    calls: list[tuple[str, int, int]] = []
    camlens.explain(
        model, x, [method], target_layer="2", batch_size=4, num_samples=3,
        progress=lambda label, done, total: calls.append((label, done, total)),
    )  # fmt: skip
    assert_counts_up_to(calls, method, 2 * per_image)
    assert len(counts(calls, method)[0]) > 2  # per chunk of forward passes, not once at the end


def test_sess_counts_its_patches():
    model, x = tiny(), torch.rand(1, 3, 16, 24)
    recorder = Recorder()
    camlens.explain(model, x, ["sess"], target_layer="2", num_samples=2, batch_size=1, progress=recorder)
    # scale 1: 16 x 24 -> 2 windows of 16; scale 2: 21 x 31 -> 2 x 2 windows
    assert_counts_up_to(recorder.calls, "sess", 2 + 4)
    assert recorder.notes == ["sess: 6 forward and backward passes (6 patches over 2 scales x 1 image), 1 at a time"]


def test_the_cost_note_states_the_forward_passes_of_a_known_channel_count():
    model, x = tiny(), torch.rand(2, 3, 16, 16)
    costs = camlens.cost(model, x, ["gradcam", "scorecam", "sscam", "ablationcam"], target_layer="2", num_samples=5)
    assert set(costs) == {"scorecam", "sscam", "ablationcam"}
    assert costs["scorecam"].forward_passes == 2 * CHANNELS
    assert costs["scorecam"].note == "scorecam: 12 forward passes (6 channels of '2' x 2 images), 32 at a time"
    assert costs["sscam"].forward_passes == 2 * CHANNELS * 5
    assert costs["sscam"].note.startswith("sscam: 60 forward passes (6 channels of '2' x 5 samples x 2 images)")
    assert costs["ablationcam"].forward_passes == 2 * CHANNELS
    assert camlens.cost(model, x, ["gradcam"]) == {}
    # explain notes the same cost before the method starts, and its count equals the passes it runs
    recorder = Recorder()
    camlens.explain(model, x, ["scorecam"], target_layer="2", progress=recorder)
    assert recorder.notes == [costs["scorecam"].note]
    assert recorder.calls[-1] == ("scorecam", 2 * CHANNELS, 2 * CHANNELS)
    assert recorder.calls[0] == ("scorecam", 0, 2 * CHANNELS)


def test_progress_is_off_by_default_and_an_enclosing_block_can_turn_it_on():
    model, x = tiny(), torch.rand(1, 3, 16, 16)
    recorder = Recorder()
    camlens.explain(model, x, ["scorecam"], target_layer="2")
    assert recorder.calls == []
    with reporting(recorder):
        camlens.explain(model, x, ["scorecam"], target_layer="2")
        calls = len(recorder.calls)
        camlens.explain(model, x, ["scorecam"], target_layer="2", progress=False)  # off inside the block
    assert calls > 0 and len(recorder.calls) == calls
    with pytest.raises(TypeError, match="progress must be"):
        camlens.explain(model, x, ["gradcam"], progress="yes")


def test_the_sanity_check_counts_its_randomisation_steps():
    model, x = tiny(), torch.rand(1, 3, 16, 16)
    recorder = Recorder()
    layers = ["6", "2", "0"]
    sanity_check(model, x, ["gradcam"], layers=layers, target_layer="2", measures=["spearman"], progress=recorder)
    assert_counts_up_to(recorder.calls, "sanity check (cascading)", len(layers))
    recorder = Recorder()
    sanity_check(model, x, ["scorecam"], mode="independent", layers=layers, target_layer="2",
                 measures=["spearman"], progress=recorder)  # fmt: skip
    assert_counts_up_to(recorder.calls, "sanity check (independent)", len(layers))
    assert any(label == "scorecam" for label, _, _ in recorder.calls)  # the methods' own counts inside


def test_tqdm_progress_writes_the_note_then_a_bar_reaching_the_total():
    stream = io.StringIO()
    camlens.explain(tiny(), torch.rand(1, 3, 16, 16), ["scorecam"], target_layer="2",
                    progress=TqdmProgress(stream))  # fmt: skip
    text = stream.getvalue()
    assert text.startswith("camlens: scorecam: 6 forward passes (6 channels of '2' x 1 image), 32 at a time\n")
    assert "scorecam: 100%" in text and "6/6" in text


FACTORY = """
import torch
from torch import nn


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    ).eval()
"""


def _cli(*args: str, tmp_path) -> subprocess.CompletedProcess:
    from helpers import EXAMPLES

    (tmp_path / "tiny.py").write_text(FACTORY, encoding="utf-8")
    env = {**os.environ, "CAMLENS_OFFLINE": "1"}
    env.pop("CAMLENS_DEBUG", None)
    command = [sys.executable, "-m", "camlens.cli.main", *args, str(EXAMPLES / "cat.jpg"), "--model", "tiny.py:tiny",
               "--input-size", "32", "--layer-name", "2"]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


@pytest.mark.slow
def test_cli_progress_writes_the_cost_and_progress_lines_to_stderr(tmp_path):
    shown = _cli("explain", "--methods", "scorecam", "--progress", "--no-pictures", "--output-dir", "a",
                 tmp_path=tmp_path)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "camlens: scorecam: 6 forward passes (6 channels of '2' x 1 image), 32 at a time" in shown.stderr
    assert "scorecam: 100%" in shown.stderr and "6/6" in shown.stderr
    quiet = _cli("explain", "--methods", "scorecam", "--no-progress", "--no-pictures", "--output-dir", "b",
                 tmp_path=tmp_path)  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    assert "scorecam" not in quiet.stderr
    # without a terminal and without --progress: the cost note only, no bars
    default = _cli("explain", "--methods", "scorecam", "--no-pictures", "--output-dir", "c", tmp_path=tmp_path)
    assert "camlens: scorecam: 6 forward passes" in default.stderr and "100%" not in default.stderr


@pytest.mark.slow
def test_cli_evaluate_progress_shows_the_sanity_steps(tmp_path):
    shown = _cli("evaluate", "--methods", "gradcam", "--metrics", "average_drop", "--sanity", "cascading",
                 "--progress", "--output-dir", "e", tmp_path=tmp_path)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "sanity check (cascading): 100%" in shown.stderr and "3/3" in shown.stderr
