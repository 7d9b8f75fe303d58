"""The clip task's parts (camlens.pipeline.clips): even sampling, the reader's one-line errors, and the
``--no-pictures`` batch file of a run through ``camlens.run.run(..., task=ClipClassification())``."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

import camlens
from camlens.errors import UsageError
from camlens.pipeline.clips import ClipClassification, even_indices, takes_clips
from camlens.run import RunOptions, run
from camlens.zoo.network import Network


def _net() -> Network:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()  # fmt: skip
    return Network("net3d", model, (12, 12), (0.0,), (1.0,), channels=1)


def test_even_indices_take_the_first_and_last_frames():
    assert even_indices(8, 4) == [0, 2, 5, 7]
    assert even_indices(16, 16) == list(range(16))
    assert even_indices(5, 1) == [0]
    assert even_indices(2, 4) == [0, 0, 1, 1]  # a short clip: frames repeated
    assert takes_clips(_net().model) and not takes_clips(nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_reader_errors_are_one_line(tmp_path, monkeypatch):
    task = ClipClassification()
    monkeypatch.setitem(sys.modules, "av", None)  # PyAV not installed
    with pytest.raises(UsageError, match=r"\.mp4 files needs PyAV: pip install av \(or pip install camlens\[video\]\)"):
        task.read(_net(), tmp_path / "walk.mp4", None)
    bad = tmp_path / "nan.npy"
    np.save(bad, np.full((4, 12, 12), np.nan, np.float32))
    with pytest.raises(UsageError, match="NaN"):
        task.read(_net(), bad, None)
    text = tmp_path / "words.npy"
    np.save(text, np.array(["a", "b"]))
    with pytest.raises(UsageError, match=r"a volume is a numeric \(D, H, W\) or \(C, D, H, W\) array"):
        task.read(_net(), text, None)
    with pytest.raises(UsageError, match="--frames must be at least 1"):
        ClipClassification(0)


def test_no_pictures_batch_file_holds_each_volumes_maps(tmp_path):
    rng = np.random.default_rng(1)
    volumes = [rng.random((d, 12, 12)).astype(np.float32) for d in (5, 5, 7)]  # two shapes: two explain calls
    paths = []
    for i, v in enumerate(volumes):
        paths.append(tmp_path / f"v{i}.npy")
        np.save(paths[-1], v)
    network = _net()
    options = RunOptions(methods=("gradcam",), pictures=False)
    summary = run(network, paths, tmp_path / "out", options, task=ClipClassification())
    assert [r.ok for r in summary.results] == [True, True, True]
    with np.load(tmp_path / "out" / "maps-net3d-000000.npz") as saved:
        assert saved["stems"].tolist() == ["v0", "v1", "v2"]
        for i, v in enumerate(volumes):
            picked = list(range(v.shape[0]))  # every slice of a volume
            expected = camlens.explain(network.model, torch.from_numpy(v[picked])[None, None], ["gradcam"])
            assert saved[f"v{i}/frame_indices"].tolist() == picked
            np.testing.assert_allclose(saved[f"v{i}/clip/gradcam"], expected["gradcam"][0].numpy(), atol=2e-3)


def test_strip_frames_are_at_most_128_pixels_a_side_and_the_montage_near_square():
    from camlens.pipeline.clips import montage, strip

    frames = np.zeros((5, 192, 256, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(5)[:, None, None] * 50
    row = strip(frames)
    assert row.shape == (96, 5 * 128 + 4 * 2, 3)
    assert [int(row[50, k * 130 + 60, 0]) for k in range(5)] == [0, 50, 100, 150, 200]  # the frames in order
    grid = montage(frames[:, :8, :8])
    assert grid.shape == (2 * 8 + 2, 3 * 8 + 2 * 2, 3) and grid[-1, -1].tolist() == [255, 255, 255]
