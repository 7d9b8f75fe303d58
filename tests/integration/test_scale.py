"""Folder runs at scale: a killed run (SIGKILL, Ctrl-C) resumes where it stopped and ends with the files of an
uninterrupted run; bad images are rows, not stops; the results table loads in pandas; progress lines off a
terminal; the Ray Data engine gives the local engine's results row for row."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camlens.run import JOURNAL, NetworkSpec, RunOptions, load_maps, progress_printer, read_table, run

# A small CNN with fixed weights (seeded in the factory) that takes a while per batch: a run is slow
# enough to be interrupted in its middle, and every process (and every Ray actor) builds the same model.
SLOW_NET = """
import time
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        time.sleep(float({delay!r}))
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


def net():
    torch.manual_seed(0)
    return Net()
"""
LABELS = [f"class{i}" for i in range(10)]


def _model(tmp_path: Path, delay: float) -> tuple[str, Path]:
    path = tmp_path / "slow_net.py"
    path.write_text(SLOW_NET.format(delay=delay))
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    return f"{path}:net", labels


def _folder(tmp_path: Path, count: int = 20) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 255, (48 + i, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
    return folder


def _command(model: str, labels: Path, folder: Path, out: Path, *extra: str) -> list[str]:
    exe = Path(sys.executable).with_name("camlens")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "camlens.cli.main"]
    return [
        *command,
        "explain",
        str(folder),
        "--model",
        model,
        "--input-size",
        "32",
        "--labels",
        str(labels),
        "--batch-size",
        "1",
        "--output-dir",
        str(out),
        *extra,
    ]


def _env() -> dict[str, str]:
    env = {**os.environ, "CAMLENS_OFFLINE": "1"}
    env.pop("CAMLENS_DEBUG", None)
    return env


def _final_rows(out: Path) -> dict[str, dict]:
    return {row["path"]: row for row in read_table(out) if row["status"] in ("ok", "error")}


def _pictures(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if p.suffix in (".jpg", ".npz")}


def _assert_complete(out: Path) -> None:
    """Every ok row's files exist, every picture opens (.part temporaries are not pictures)."""
    for row in _final_rows(out).values():
        if row["status"] == "ok":
            for name in row["files"]:
                assert (out / name).is_file(), name
    for name in _pictures(out):
        if name.endswith(".jpg"):
            with Image.open(out / name) as picture:
                picture.load()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """20 images, a slow model, and the output of a run that was not interrupted."""
    tmp_path = tmp_path_factory.mktemp("scale")
    model, labels = _model(tmp_path, delay=0.15)
    folder = _folder(tmp_path)
    reference = tmp_path / "reference"
    done = subprocess.run(_command(model, labels, folder, reference), capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr
    assert "explained 20 images" in done.stdout and "0 failed" in done.stdout
    return model, labels, folder, reference


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "sigint"])
def test_an_interrupted_run_resumes_with_only_the_remaining_images(tmp_path, uninterrupted, how):
    model, labels, folder, reference = uninterrupted
    out = tmp_path / "out"
    process = subprocess.Popen(
        _command(model, labels, folder, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    deadline = time.monotonic() + 120
    while len(_final_rows(out)) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(how)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == (-signal.SIGKILL if how == signal.SIGKILL else 130), stderr
    if how == signal.SIGINT:
        assert "camlens: interrupted" in stderr and "Traceback" not in stderr
        assert not list(out.glob(".*.part"))  # Ctrl-C cleans up its own temporaries
    _assert_complete(out)
    before = [row for row in _final_rows(out).values() if row["status"] == "ok"]
    assert 3 <= len(before) < 20, "the run was not interrupted in its middle"

    again = subprocess.run(_command(model, labels, folder, out), capture_output=True, text=True, env=_env())
    assert again.returncode == 0, again.stderr
    assert f"explained {20 - len(before)} images, {len(before)} done before (resumed), 0 failed" in again.stdout
    assert not list(out.glob(".*.part")) and not (out / JOURNAL).exists()
    _assert_complete(out)
    assert _pictures(out) == _pictures(reference)
    rows, expected = _final_rows(out), _final_rows(reference)
    assert len(rows) == 20 and all(row["status"] == "ok" for row in rows.values())
    for path, row in expected.items():
        assert rows[path]["class_id"] == row["class_id"]
        assert rows[path]["score"] == pytest.approx(row["score"], abs=1e-5)

    third = subprocess.run(_command(model, labels, folder, out), capture_output=True, text=True, env=_env())
    assert third.returncode == 0, third.stderr
    assert "explained 0 images, 20 done before (resumed)" in third.stdout


@pytest.mark.slow
def test_a_bad_image_is_a_row_and_fail_fast_stops(tmp_path):
    model, labels = _model(tmp_path, delay=0)
    folder = _folder(tmp_path, count=4)
    (folder / "img01b.jpg").write_bytes(b"not a picture")
    out = tmp_path / "out"
    result = subprocess.run(_command(model, labels, folder, out), capture_output=True, text=True, env=_env())
    assert result.returncode == 2, result.stderr
    assert "explained 4 images, 1 failed" in result.stdout and f"tables: {out}" in result.stdout
    assert "img01b.jpg" in result.stderr
    rows = _final_rows(out)
    assert sorted(Path(p).name for p, r in rows.items() if r["status"] == "ok") == [f"img0{i}.png" for i in range(4)]
    (bad,) = [r for r in rows.values() if r["status"] == "error"]
    assert bad["path"].endswith("img01b.jpg") and "not an image" in bad["error"] and bad["files"] == []

    stopped = tmp_path / "stopped"
    result = subprocess.run(
        _command(model, labels, folder, stopped, "--fail-fast"), capture_output=True, text=True, env=_env()
    )
    assert result.returncode == 2 and "img01b.jpg" in result.stderr
    done = [Path(p).name for p, r in _final_rows(stopped).items()]
    assert done == ["img00.png", "img01.png"]  # the files before the bad one, then the stop


def test_the_results_table_loads_in_pandas_with_the_columns(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    model, labels = _model(tmp_path, delay=0)
    folder = _folder(tmp_path, count=3)
    (folder / "zz.png").write_bytes(b"")
    spec = NetworkSpec(model, input_size=32, labels=tuple(LABELS))

    def metrics(result):
        return {"gradcam/max": float(result.maps["gradcam"].max())}

    options = RunOptions(methods=("gradcam",), topk=3, batch_size=2)
    summary = run(spec, [folder], tmp_path / "out", options, metrics=metrics)
    assert summary.table == tmp_path / "out" / "results.parquet" and len(summary.failures) == 1
    table = pd.read_parquet(summary.table)
    csv = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(table["path"]) == list(csv["path"]) == [str(p) for p in sorted(folder.iterdir())]
    ok = table[table["status"] == "ok"]
    assert len(ok) == 3 and set(ok["layer"]) == {"relu"}
    assert all(len(topk) == 3 and topk[0]["label"] == LABELS[topk[0]["class_id"]] for topk in ok["topk"])
    assert list(ok["class_id"]) == [topk[0]["class_id"] for topk in ok["topk"]]  # the predicted class
    assert all(
        list(files) == [f"{Path(p).stem}-slow_net-net-heatmap.jpg", f"{Path(p).stem}-slow_net-net-cam.jpg"]
        for p, files in zip(ok["path"], ok["files"], strict=True)
    )
    assert (ok["metric_gradcam/max"] == 1.0).all()  # maps are normalised to a maximum of 1
    assert list(ok["width"]) == [64, 64, 64] and list(ok["height"]) == [48, 49, 50]
    error = table[table["status"] == "error"].iloc[0]
    assert "empty" in error["error"] and np.isnan(error["score"]) and len(error["files"]) == 0
    assert (csv["topk"].str.count(";") == 2).sum() == 3


def test_progress_off_a_terminal_is_a_plain_line_with_rate_and_eta():
    stream = io.StringIO()
    show = progress_printer(stream, every=0)
    show(5, 25)  # 5 done by an earlier run: the baseline
    time.sleep(0.05)
    show(15, 25)
    show(25, 25)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 2
    assert lines[0].startswith("camlens: 15/25 images, ") and "img/s, ETA " in lines[0]
    rate = float(lines[0].split(", ")[1].split()[0])
    eta = float(lines[0].split("ETA ")[1].split()[0])
    assert rate > 0 and eta == pytest.approx(10 / rate, abs=1)  # 10 left at this run's own rate
    assert lines[1].startswith("camlens: 25/25 images") and lines[1].endswith("ETA 0 s")

    quiet = io.StringIO()
    show = progress_printer(quiet, every=3600)
    for done in range(0, 11):
        show(done, 10)
    assert quiet.getvalue().splitlines() == [quiet.getvalue().splitlines()[-1]]  # only the final line
    assert quiet.getvalue().startswith("camlens: 10/10 images")


def test_progress_on_a_terminal_is_a_bar_with_rate_and_eta():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    show = progress_printer(stream)
    show(0, 4)
    show(2, 4)
    show(4, 4)
    text = stream.getvalue()
    assert "\r" in text and "2/4" in text and "4/4" in text and "img/s" in text and "<" in text  # elapsed<ETA


# ------------------------------------------------------------------------------------------ Ray
@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
    assert not ray.is_initialized()


@pytest.mark.slow
def test_the_ray_engine_gives_the_local_results_row_for_row(tmp_path, local_ray):
    model, labels = _model(tmp_path, delay=0)
    folder = _folder(tmp_path, count=5)
    (folder / "img02b.png").write_bytes(b"broken")
    spec = NetworkSpec(model, input_size=32, labels=tuple(LABELS))
    options = RunOptions(batch_size=2, save_maps=True)
    local = run(spec, [folder], tmp_path / "local", options)
    seen = []
    remote = run(spec, [folder], tmp_path / "ray", options, engine="ray", workers=1, on_result=seen.append)
    assert remote.engine == "ray" and len(remote.results) == 6 and len(remote.failures) == 1
    assert [r.path for r in seen] == [r.path for r in local.results]  # input order
    a, b = read_table(tmp_path / "local"), read_table(tmp_path / "ray")
    assert len(a) == len(b) == 6
    for row_a, row_b in zip(a, b, strict=True):
        score_a, score_b = row_a.pop("score"), row_b.pop("score")
        assert row_a == row_b
        assert (score_a is None and score_b is None) or score_a == pytest.approx(score_b, abs=1e-5)
    assert _pictures(tmp_path / "local") == _pictures(tmp_path / "ray")
    for name in _pictures(tmp_path / "local"):
        if name.endswith(".npz"):
            with np.load(tmp_path / "local" / name) as stored_a, np.load(tmp_path / "ray" / name) as stored_b:
                assert stored_a.files == stored_b.files  # the compact maps, key by key
                for key in stored_a.files:
                    value_a, value_b = stored_a[key], stored_b[key]
                    if value_a.dtype.kind == "f":
                        np.testing.assert_allclose(value_a, value_b, atol=1e-5)
                    else:  # stem, methods, photo size, class
                        np.testing.assert_array_equal(value_a, value_b)
            maps_a, maps_b = load_maps(tmp_path / "local" / name), load_maps(tmp_path / "ray" / name)
            assert list(maps_a) == list(maps_b) and len(maps_a) == 1
            for stem, maps in maps_a.items():  # and the maps at the photo's size
                assert list(maps) == list(maps_b[stem]) == list(options.methods)
                for method, value in maps.items():
                    np.testing.assert_allclose(value, maps_b[stem][method], atol=1e-5)
    if (tmp_path / "ray" / "results.parquet").exists():
        import pyarrow.parquet as pq

        assert pq.read_table(tmp_path / "ray" / "results.parquet").num_rows == 6
    again = run(spec, [folder], tmp_path / "ray", options, engine="ray", workers=1)
    assert again.skipped == 5 and [r.path for r in again.results] == [str(folder / "img02b.png")]
    assert local_ray.is_initialized()  # a Ray the caller started is left running


def test_the_ray_engine_needs_a_spec_not_a_model(tmp_path):
    model, labels = _model(tmp_path, delay=0)
    network = NetworkSpec(model, input_size=32).build()
    del network.spec
    with pytest.raises(Exception, match="NetworkSpec"):
        run(network, [_folder(tmp_path, count=1)], tmp_path / "out", engine="ray")


def test_without_ray_the_command_names_the_extra(tmp_path):
    fake = tmp_path / "no_ray"
    (fake / "ray").mkdir(parents=True)
    (fake / "ray" / "__init__.py").write_text("raise ImportError('no ray here')\n")
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(fake), env.get("PYTHONPATH", "")])
    model, labels = _model(tmp_path, delay=0)
    folder = _folder(tmp_path, count=1)
    result = subprocess.run(
        _command(model, labels, folder, tmp_path / "out", "--engine", "ray"), capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "camlens: error: the Ray engine needs Ray: pip install camlens[ray]"


@pytest.mark.slow
def test_the_command_runs_on_ray(tmp_path):
    pytest.importorskip("ray.data")
    model, labels = _model(tmp_path, delay=0)
    folder = _folder(tmp_path, count=3)
    out = tmp_path / "out"
    command = _command(model, labels, folder, out, "--engine", "ray", "--workers", "1", "--methods", "gradcam")
    result = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=600)
    assert result.returncode == 0, result.stderr
    assert "explained 3 images, 0 failed" in result.stdout and "img02.png" in result.stdout
    rows = _final_rows(out)
    assert len(rows) == 3 and all(row["status"] == "ok" and len(row["files"]) == 2 for row in rows.values())
    _assert_complete(out)
