"""Folder runs of ``camlens explain``: odd folder entries, long names, one run per output folder, file modes,
Ctrl-C, fast failure on a missing input, user factories' names and the tables written."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

TINY = "import torch.nn as nn\n" + "".join(
    f"def {name}():\n"
    "    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
    f"                         nn.Linear(4, {classes}))\n"
    for name, classes in (("net", 3), ("other", 5))
)


def _tiny_model(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.py"
    path.write_text(TINY)
    return path


def _images(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        path = folder / name
        Image.new("RGB", (20, 16), (40 * i % 256, 90, 200)).save(path)
        paths.append(path)
    return paths


def _explain(run, tmp_path: Path, *args: str, factory: str = "net"):
    """``camlens explain`` with the tiny factory model at 16 px, Grad-CAM only (about a second)."""
    model = f"{_tiny_model(tmp_path)}:{factory}"
    return run("explain", *args, "--model", model, "--input-size", "16", "--methods", "gradcam")


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_symlink_loop_a_broken_link_and_a_folder_named_like_an_image_are_failed_rows(run, tmp_path):
    folder = tmp_path / "in"
    _images(folder, ["a.jpg", "b.jpg"])
    (folder / "loop").symlink_to(folder / "loop")
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (folder / "x.jpg").mkdir()
    out = tmp_path / "out"
    result = _explain(run, tmp_path, str(folder), "--output-dir", str(out))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    status = {Path(r["path"]).name: (r["status"], r["error"]) for r in _rows(out)}
    assert status["a.jpg"][0] == status["b.jpg"][0] == "ok"
    assert status["loop"][0] == "error" and "symbolic link loop" in status["loop"][1]
    assert status["gone.jpg"][0] == "error" and "broken symbolic link" in status["gone.jpg"][1]
    assert status["x.jpg"][0] == "error" and "is a folder" in status["x.jpg"][1]
    errors = [line for line in result.stderr.splitlines() if line.startswith("camlens: error:")]
    assert len(errors) == 3, result.stderr
    assert "explained 2 images" in result.stdout and "3 failed" in result.stdout


@pytest.mark.slow
def test_sub_folders_are_named_in_a_note_and_searched_with_recursive(run, tmp_path):
    folder = tmp_path / "in"
    _images(folder, ["top.jpg"])
    _images(folder / "sub", ["deep.jpg"])
    _images(folder / "sub" / "subsub", ["deeper.png"])
    (folder / "sub" / "back").symlink_to(folder, target_is_directory=True)  # a cycle is not walked twice
    out = tmp_path / "out"
    result = _explain(run, tmp_path, str(folder), "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert "camlens: note: 1 sub-folder was not searched (pass --recursive" in result.stderr
    assert [Path(r["path"]).name for r in _rows(out)] == ["top.jpg"]
    result = _explain(run, tmp_path, str(folder), "--recursive", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert "not searched" not in result.stderr
    assert sorted(Path(r["path"]).name for r in _rows(out)) == ["deep.jpg", "deeper.png", "top.jpg"]
    assert "explained 2 images, 1 done before (resumed)" in result.stdout


@pytest.mark.slow
def test_a_240_character_name_is_written_under_a_shortened_name_and_resumes(run, tmp_path):
    folder = tmp_path / "in"
    long_name = "n" * 236 + ".jpg"  # 240 characters: legal, but too long with -<network>-heatmap.jpg
    _images(folder, ["a.jpg", long_name, "z.jpg"])
    out = tmp_path / "out"
    args = [str(folder), "--output-dir", str(out), "--batch-size", "1"]
    result = _explain(run, tmp_path, *args)
    assert result.returncode == 0, result.stderr
    rows = {Path(r["path"]).name: r for r in _rows(out)}
    assert [r["status"] for r in rows.values()] == ["ok"] * 3
    files = rows[long_name]["files"]
    assert files and all(len(name.encode()) <= 255 and (out / name).is_file() for name in files)
    assert rows[long_name]["stem"].startswith("n" * 100) and any("name too long" in n for n in rows[long_name]["notes"])
    assert not [p.name for p in out.iterdir() if p.name.endswith(".part")]
    again = _explain(run, tmp_path, *args)
    assert again.returncode == 0 and "explained 0 images, 3 done before (resumed)" in again.stdout, again.stdout
    (out / files[0]).unlink()  # the same name again: a redone image replaces nothing it should not
    redo = _explain(run, tmp_path, *args, "--no-resume", "--overwrite")
    assert redo.returncode == 0 and sorted(_rows(out)[-2]["files"]) == sorted(files), redo.stderr


@pytest.mark.slow
def test_a_second_run_into_a_folder_in_use_stops_naming_the_other_run(run, tmp_path):
    _images(tmp_path / "in", ["a.jpg"])
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"fd = os.open({str(out / '.camlens.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, f'{os.getpid()}\\n'.encode())\n"
         "print('locked', flush=True); time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.perf_counter()
        result = _explain(run, tmp_path, str(tmp_path / "in"), "--output-dir", str(out))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {holder.pid}" in lines[0] and str(out) in lines[0], result.stderr
        assert not (out / "results.jsonl").exists() and time.perf_counter() - start < 60
    finally:
        holder.kill()
        holder.wait()
    # the holder died without unlocking or removing its file: the lock is free
    result = _explain(run, tmp_path, str(tmp_path / "in"), "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert not (out / ".camlens.lock").exists()


@pytest.mark.slow
def test_two_runs_at_once_into_one_folder_do_each_image_once(tmp_path):
    _images(tmp_path / "in", [f"im{i}.jpg" for i in range(6)])
    model = f"{_tiny_model(tmp_path)}:net"
    exe = Path(sys.executable).with_name("camlens")
    env = {**os.environ, "CAMLENS_OFFLINE": "1"}
    command = [str(exe), "explain", str(tmp_path / "in"), "--model", model, "--input-size", "16",
               "--methods", "gradcam", "--batch-size", "1", "--output-dir", str(tmp_path / "out")]  # fmt: skip
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env) for _ in range(2)]  # fmt: skip
    outcomes = [(p.wait(timeout=300), p.communicate()[1]) for p in processes]
    rows = _rows(tmp_path / "out")
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)), "an image was done twice"
    codes = sorted(code for code, _ in outcomes)
    if codes == [0, 2]:  # they overlapped: the second stopped at once
        stderr = next(err for code, err in outcomes if code == 2)
        assert "another camlens run (pid" in stderr, stderr
    else:  # one finished before the other took the lock: the second resumed everything
        assert codes == [0, 0], outcomes


def test_an_output_folder_another_run_makes_at_the_same_moment_is_used_not_refused(tmp_path, monkeypatch):
    from camlens.pipeline.files import UsageError, make_dir

    out = tmp_path / "out"
    mkdir = Path.mkdir

    def the_other_run_first(self, *args, **kwargs):  # the other run's mkdir lands between the check and ours
        mkdir(self, parents=True, exist_ok=True)
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", the_other_run_first)
    assert make_dir(out) is False and out.is_dir()  # not ours: a failed run must not remove it
    monkeypatch.undo()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="a file of that name exists"):
        make_dir(tmp_path / "file")


@pytest.mark.slow
def test_pictures_and_tables_honour_the_umask(tmp_path):
    _images(tmp_path / "in", ["a.jpg", "b.png"])
    model = f"{_tiny_model(tmp_path)}:net"
    for mask, mode in ((0o022, 0o644), (0o027, 0o640)):
        out = tmp_path / f"out{mask:o}"
        code = (
            f"import os, sys; os.umask({mask}); from camlens.cli.main import main; sys.exit(main(sys.argv[1:]))"
        )
        args = [str(tmp_path / "in"), "--model", model, "--input-size", "16", "--methods", "gradcam", "--save-maps",
                "--output-dir", str(out)]  # fmt: skip
        result = subprocess.run([sys.executable, "-c", code, "explain", *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
        assert {"results.jsonl", "results.csv", "results.parquet", "a-tiny-net-maps.npz"} <= set(modes)
        assert set(modes.values()) == {mode}, (oct(mask), {k: oct(v) for k, v in modes.items()})


@pytest.mark.slow
def test_ctrl_c_in_a_folder_run_says_how_many_are_done_and_that_running_again_resumes(tmp_path):
    folder = tmp_path / "in"
    _images(folder, [f"im{i:02d}.jpg" for i in range(40)])
    out = tmp_path / "out"
    model = f"{_tiny_model(tmp_path)}:net"
    exe = Path(sys.executable).with_name("camlens")
    env = {**os.environ, "CAMLENS_OFFLINE": "1"}
    command = [str(exe), "explain", str(folder), "--model", model, "--input-size", "16", "--methods", "gradcam",
               "--batch-size", "1", "--metrics", "deletion", "--metric-steps", "200",
               "--output-dir", str(out)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "results.jsonl").exists():
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the interrupt")
    assert process.returncode == 130 and "Traceback" not in stderr, (process.returncode, stderr)
    last = stderr.strip().splitlines()[-1]
    done = sum(r["status"] == "ok" for r in _rows(out))
    assert last == (
        f"camlens: interrupted: {done} of 40 images done (in {out}); "
        "run the same command again to do the rest (it resumes)"
    ), last
    assert 0 < done < 40


def test_a_missing_image_fails_before_torch_is_imported(tmp_path):
    code = (
        "import sys\n"
        "from camlens.cli.main import main\n"
        "status = main(['explain', 'examples/cat.jpg', 'nope.jpg', '--output-dir', sys.argv[1]])\n"
        "print(status, 'torch' in sys.modules)\n"
    )
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert result.stdout.split() == ["2", "False"], (result.stdout, result.stderr)
    assert result.stderr.strip() == "camlens: error: image nope.jpg does not exist"
    assert time.perf_counter() - start < 10 and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_factories_of_one_file_are_two_networks(run, tmp_path):
    _images(tmp_path / "in", ["a.jpg"])
    out = tmp_path / "out"
    first = _explain(run, tmp_path, str(tmp_path / "in"), "--output-dir", str(out), factory="net")
    second = _explain(run, tmp_path, str(tmp_path / "in"), "--output-dir", str(out), factory="other")
    assert first.returncode == second.returncode == 0, second.stderr
    assert "explained 1 image," in second.stdout and "resumed" not in second.stdout, second.stdout
    assert sorted({r["network"] for r in _rows(out)}) == ["tiny-net", "tiny-other"]
    assert (out / "a-tiny-net-heatmap.jpg").is_file() and (out / "a-tiny-other-heatmap.jpg").is_file()


@pytest.mark.slow
def test_the_parquet_integers_stay_integers_and_every_table_is_named(run, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    folder = tmp_path / "in"
    _images(folder, ["a.jpg"])
    (folder / "bad.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = _explain(run, tmp_path, str(folder), "--output-dir", str(out))
    assert result.returncode == 2, result.stderr
    assert result.stdout.splitlines()[-1] == (
        f"tables: {out / 'results.jsonl'}, {out / 'results.csv'}, {out / 'results.parquet'}"
    )
    frame = pd.read_parquet(out / "results.parquet")
    for column in ("class_id", "width", "height"):
        assert str(frame[column].dtype) == "Int64", frame.dtypes
    ok = frame[frame["status"] == "ok"].iloc[0]
    bad = frame[frame["status"] == "error"].iloc[0]
    assert (ok["width"], ok["height"]) == (20, 16) and pd.isna(bad["class_id"]) and pd.isna(bad["width"])


def test_the_lock_is_taken_and_given_back_by_the_library(tmp_path):
    from camlens.errors import UsageError
    from camlens.run import LOCK, lock_output_dir

    out = tmp_path / "new"
    release = lock_output_dir(out)
    with pytest.raises(UsageError, match=rf"pid {os.getpid()}\) is writing into"):
        lock_output_dir(out)
    release()
    assert not out.exists()  # created by the lock and left empty: removed
    out.mkdir()
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.close(fd)  # closed: a stale file, not a lock
    lock_output_dir(out)()
    assert out.is_dir() and not any(out.iterdir())
