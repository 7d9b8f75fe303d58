"""The maps files of a folder run (compact: CAMs at the layer's resolution, image-shaped maps at the input
size) read back at the photo's size equal the in-process maps: ``render.maps_at_size`` of ``camlens.explain``
on the same decoded images (the oracle), for ``--save-maps`` and ``--no-pictures`` files alike; files of the
earlier format (photo-size maps) still load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import camlens
from camlens.images import read_image, to_batch
from camlens.render import maps_at_size
from camlens.run import RunOptions, load_maps, read_table, run
from camlens.zoo import Network

METHODS = ("gradcam", "gradcam++", "guided_backprop", "guided_gradcam")


def _network() -> Network:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )  # fmt: skip
    return Network("tiny", model.eval(), (32, 32), labels=[f"c{i}" for i in range(5)])


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate([(40, 56), (61, 37), (48, 48)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def _expected(network: Network, paths, methods) -> dict[str, dict[str, np.ndarray]]:
    rgbs = [read_image(p) for p in paths]
    x = to_batch(rgbs, network.input_size, network.mean, network.std)
    result = camlens.explain(network.model, x, list(methods))
    out = {}
    for i, (path, rgb) in enumerate(zip(paths, rgbs, strict=True)):
        maps = maps_at_size(result, i, list(methods), rgb.shape[:2])
        out[path.stem] = {m: v.numpy() if v.dim() == 2 else np.transpose(v.numpy(), (1, 2, 0)) for m, v in maps.items()}
    return out


@pytest.mark.parametrize("methods", [METHODS, ("guided_gradcam",), ("gradcam++", "guided_backprop")])
def test_save_maps_files_give_the_in_process_maps_at_the_photo_size(photos, tmp_path, methods):
    network = _network()
    seen = {}
    run(network, [photos], tmp_path, RunOptions(methods=methods, save_maps=True, batch_size=2),
        on_result=lambda r: seen.update({r.stem: {m: v.clone() for m, v in r.maps.items()}}))  # fmt: skip
    expected = _expected(network, sorted(photos.iterdir()), methods)
    for stem, maps in expected.items():
        loaded = load_maps(tmp_path / f"{stem}-tiny-maps.npz")
        assert list(loaded) == [stem] and list(loaded[stem]) == list(methods)
        for m, want in maps.items():
            got = loaded[stem][m]
            assert got.shape == want.shape and got.dtype == np.float32, (m, got.shape, want.shape)
            np.testing.assert_allclose(got, want, atol=2e-6, err_msg=m)
            in_memory = seen[stem][m].numpy()  # the result's own (lazy) photo-size maps
            np.testing.assert_allclose(in_memory if in_memory.ndim == 2 else np.transpose(in_memory, (1, 2, 0)),
                                       want, atol=2e-6, err_msg=m)  # fmt: skip
        for m in ("gradcam", "gradcam++"):
            if m in maps:
                assert loaded[stem][m].min() >= 0 and loaded[stem][m].max() == 1
        with np.load(tmp_path / f"{stem}-tiny-maps.npz") as raw:  # compact: CAMs at the layer's resolution
            assert tuple(raw["photo_size"]) == maps[methods[0]].shape[:2]
            for m in methods:
                if m.startswith("gradcam"):
                    assert raw[f"cam/{m}"].shape == (16, 16)
            assert "input/guided_gradcam" not in raw.files  # rebuilt on load


def test_no_pictures_batch_files_hold_every_stem_and_are_small(photos, tmp_path):
    network = _network()
    summary = run(network, [photos], tmp_path, RunOptions(pictures=False, batch_size=2))
    files = sorted({name for r in summary.results for name in r.files})
    assert files == ["maps-tiny-000000.npz", "maps-tiny-000001.npz"]
    loaded = {}
    for name in files:
        loaded.update(load_maps(tmp_path / name))
    expected = _expected(network, sorted(photos.iterdir()), METHODS)
    assert sorted(loaded) == sorted(expected)
    for stem, maps in expected.items():
        for m, want in maps.items():
            assert loaded[stem][m].shape == want.shape
            # guided backprop is stored as float16 at the input size: half precision of its largest value
            tolerance = 2e-6 if m.startswith("gradcam") else 2e-3 * float(np.abs(want).max())
            np.testing.assert_allclose(loaded[stem][m], want, atol=tolerance, err_msg=m)
    rows = {row["stem"]: row for row in read_table(tmp_path)}
    for stem, maps in expected.items():
        assert (rows[stem]["height"], rows[stem]["width"]) == maps["gradcam"].shape
    # the image-shaped map at the 32 px input, not at the photo's size (as float16: 2 bytes a value)
    stored = sum((tmp_path / name).stat().st_size for name in files)
    assert stored < 3 * (3 * 32 * 32 * 2 + 2 * 16 * 16 * 4) + 6000


def test_files_of_the_earlier_format_still_load(tmp_path):
    rng = np.random.default_rng(0)
    cam, gradient = rng.random((5, 7)).astype(np.float32), rng.random((5, 7, 3)).astype(np.float32)
    np.savez_compressed(tmp_path / "cat-net-maps.npz", gradcam=cam, guided_backprop=gradient,
                        class_id=np.int64(3), score=np.float32(1.5))  # fmt: skip
    old = load_maps(tmp_path / "cat-net-maps.npz")
    assert list(old) == ["cat-net"]
    np.testing.assert_array_equal(old["cat-net"]["gradcam"], cam)
    np.testing.assert_array_equal(old["cat-net"]["guided_backprop"], gradient)
    np.savez_compressed(tmp_path / "maps-net-000000.npz", **{"a/gradcam": cam.astype(np.float16),
                        "a/guided_backprop": np.transpose(gradient, (2, 0, 1)).astype(np.float16)})  # fmt: skip
    batch = load_maps(tmp_path / "maps-net-000000.npz")
    np.testing.assert_allclose(batch["a"]["gradcam"], cam, atol=1e-3)
    np.testing.assert_allclose(batch["a"]["guided_backprop"], gradient, atol=1e-3)  # channels last, like the rest
    np.savez(tmp_path / "other.npz", weights=cam)
    with pytest.raises(ValueError, match="not a maps file"):
        load_maps(tmp_path / "other.npz")


def test_a_photo_up_to_four_times_the_input_is_read_as_it_is_without_pictures(tmp_path):
    network = _network()  # 32 px input: photos up to 128 px are read whole without pictures
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 255, (100, 120, 3), dtype=np.uint8)).save(folder / "big.png")
    with_pictures = run(network, [folder], tmp_path / "a", RunOptions(batch_size=1)).results[0]
    without = run(network, [folder], tmp_path / "b", RunOptions(pictures=False, batch_size=1)).results[0]
    x = to_batch([read_image(folder / "big.png")], network.input_size, network.mean, network.std)
    expected = camlens.explain(network.model, x, ["gradcam"])
    assert without.score == with_pictures.score == pytest.approx(float(expected.scores[0]), abs=1e-6)
    rows = {row["stem"]: row for row in read_table(tmp_path / "b")}
    assert (rows["big"]["height"], rows["big"]["width"]) == (100, 120)  # the photo's own size


@pytest.mark.parametrize("pictures", [True, False])
def test_the_reader_and_encoder_threads_do_no_torch_resizing(photos, tmp_path, monkeypatch, pictures):
    # torch work in a helper thread starts an OpenMP team beside the model's and slows every op of the model:
    # the inputs are made and the maps resized in the thread that runs the model (camlens.pipeline.engines)
    import threading

    threads = []
    resize = torch.nn.functional.interpolate

    def watched(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return resize(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "interpolate", watched)
    summary = run(_network(), [photos], tmp_path, RunOptions(pictures=pictures, batch_size=2))
    assert len(summary.results) == 3 and not summary.failures
    assert threads and all(not name.startswith(("camlens-read", "camlens-encode")) for name in threads), threads
