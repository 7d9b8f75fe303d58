"""A task plugs into a folder run through camlens.pipeline.task.Task: its files and row fields are written,
its name keeps its rows apart from another task's when resuming, and the default task is the classification
that ``camlens explain`` runs (same files and rows as without ``task``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from camlens.pipeline.task import CLASSIFICATION, ImageClassification
from camlens.run import RunOptions, read_table, run
from camlens.zoo import Network


def _network() -> Network:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )  # fmt: skip
    return Network("tiny", model.eval(), (16, 16), labels=["a", "b", "c"])


class Brightness(ImageClassification):
    """Classification plus a row field and a file of its own: each image's mean brightness."""

    name = "brightness"

    def planned_files(self, stem, network, options):
        return [*super().planned_files(stem, network, options), f"{stem}-{network}-brightness.json"]

    def files(self, record, network, options):
        value = round(float(np.asarray(record.rgb).mean()), 3)
        return {
            **super().files(record, network, options),
            f"{record.stem}-{network}-brightness.json": json.dumps(value).encode(),
        }

    def row(self, record, network, key):
        return {**super().row(record, network, key), "brightness_file": f"{record.stem}-{network}-brightness.json"}


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, level in enumerate((40, 200)):
        Image.fromarray(np.full((20, 24, 3), level, dtype=np.uint8)).save(folder / f"p{i}.png")
    (folder / "bad.png").write_bytes(b"not an image")
    return folder


def test_a_task_writes_its_own_files_and_rows_and_resumes_apart(photos, tmp_path):
    options = RunOptions(methods=("gradcam",), batch_size=2)
    out = tmp_path / "out"
    summary = run(_network(), [photos], out, options, task=Brightness())
    assert len(summary.results) == 3 and len(summary.failures) == 1
    rows = {row["stem"]: row for row in read_table(out)}
    for stem, level in (("p0", 40), ("p1", 200)):
        assert json.loads((out / rows[stem]["brightness_file"]).read_text()) == level
        assert f"{stem}-tiny-brightness.json" in rows[stem]["files"]
        assert (out / f"{stem}-tiny-cam.jpg").is_file()
    assert rows["bad"]["status"] == "error" and "brightness_file" in rows["bad"]
    again = run(_network(), [photos], out, options, task=Brightness())
    assert again.skipped == 2
    # the classification task's key differs: its rows are not the brightness task's, so nothing is skipped
    # (and the brightness task's pictures are in the way of its own without --overwrite)
    plain = run(_network(), [photos], out, RunOptions(**{**options.__dict__, "overwrite": True}))
    assert plain.skipped == 0


def test_the_default_task_is_classification(photos, tmp_path):
    options = RunOptions(methods=("gradcam", "guided_backprop"), batch_size=2)
    run(_network(), [photos], tmp_path / "default", options)
    run(_network(), [photos], tmp_path / "explicit", options, task=CLASSIFICATION)
    a, b = read_table(tmp_path / "default"), read_table(tmp_path / "explicit")
    for row_a, row_b in zip(a, b, strict=True):
        assert {k: v for k, v in row_a.items() if k != "score"} == {k: v for k, v in row_b.items() if k != "score"}
    names = sorted(p.name for p in (tmp_path / "default").iterdir() if p.suffix == ".jpg")
    assert names == sorted(p.name for p in (tmp_path / "explicit").iterdir() if p.suffix == ".jpg")
    assert len(names) == 2 * 3  # two photos, three pictures each (cam, heatmap, gb)
