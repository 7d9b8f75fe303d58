"""``camlens explain`` on clips and volumes (camlens.pipeline.clips through the folder run): GIFs, folders of
frames, MP4s (written here with PyAV) and ``.npy`` volumes; the saved maps are ``camlens.explain``'s on the
same clip decoded here independently, the pictures show them, and bad files are rows with a one-line error.
Small clips (8 frames of 32 x 32), random weights."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import camlens
from camlens.cli.main import main
from camlens.pipeline.table import read_table
from camlens.viz.annotate import colorize
from camlens.zoo.network import IMAGENET_MEAN, IMAGENET_STD

FACTORIES = textwrap.dedent(
    """
    import torch
    from torch import nn

    def _net(channels):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv3d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 8, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, 5),
        )

    def rgb():
        return _net(3)

    def grey():
        return _net(1)

    def mvit():
        # torchvision's MViT-v2 with mvit_v2_s's options, three blocks, for 4 x 32 x 32 clips
        from torchvision.models.video.mvit import MSBlockConfig, MViT

        torch.manual_seed(0)
        k = [3, 3, 3]
        blocks = [MSBlockConfig(1, 16, 16, k, k, [1, 1, 1], [1, 4, 4]),
                  MSBlockConfig(2, 16, 32, k, k, [1, 2, 2], [1, 2, 2])]
        return MViT(spatial_size=(32, 32), temporal_size=4, block_setting=blocks, residual_pool=True,
                    residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True, num_classes=5).eval()
    """
)


@pytest.fixture()
def clips(tmp_path):
    """An 8-frame GIF with a bright square moving across, the same frames as a folder of PNGs, bad files."""
    frames = []
    for t in range(8):
        frame = np.full((32, 32, 3), 40, np.uint8)
        frame[8:16, 3 * t : 3 * t + 8] = (250, 200, 30)
        frame[24:, :, 2] = 20 * t
        frames.append(Image.fromarray(frame))
    gif = tmp_path / "move.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    decoded = []
    with Image.open(gif) as image:  # the GIF's own (palette) pixels: the folder's frames are the same
        for t in range(image.n_frames):
            image.seek(t)
            decoded.append(np.asarray(image.convert("RGB")))
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(decoded):
        Image.fromarray(frame).save(folder / f"f{t:02d}.png")
    bad = tmp_path / "broken.gif"
    bad.write_bytes(gif.read_bytes()[:40])
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((32, 32), np.float32))
    model = tmp_path / "nets.py"
    model.write_text(FACTORIES)
    return {"gif": gif, "folder": folder, "frames": np.stack(decoded), "bad": bad, "flat": flat, "model": model}


def _rows(out):
    return {r["stem"]: r for r in read_table(out)}


def _expected(model_factory, x, methods):
    return camlens.explain(model_factory(), x, methods)


def _factories():
    namespace: dict = {}
    exec(FACTORIES, namespace)  # noqa: S102 - the test's own factories
    return namespace


def test_gif_and_frame_folder_maps_are_the_librarys_on_the_sampled_frames(clips, tmp_path, capsys):
    out = tmp_path / "out"
    code = main([
        "explain", str(clips["gif"]), str(clips["folder"]), str(clips["bad"]), str(clips["flat"]), "--frame-folders",
        "--model", f"{clips['model']}:rgb", "--input-size", "32", "--frames", "4", "--methods", "gradcam",
        "guided_backprop", "--save-maps", "--output-dir", str(out),
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("camlens: error:")]
    assert len(errors) == 2 and "Traceback" not in captured.err
    assert "broken.gif cannot be read" in errors[0]
    assert "flat.npy" in errors[1] and "(D, H, W) or (C, D, H, W)" in errors[1]
    assert "explained 2 clips, 2 failed" in captured.out
    rows = _rows(out)
    statuses = {s: r["status"] for s, r in rows.items()}
    assert statuses == {"move": "ok", "frames": "ok", "broken": "error", "flat": "error"}
    # the oracle: frames 0, 2, 5, 7 of 8 (evenly spaced), normalised as images are, through camlens.explain
    indices = [0, 2, 5, 7]
    x = torch.from_numpy(clips["frames"][indices].astype(np.float32) / 255.0).permute(3, 0, 1, 2)[None]
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    expected = _expected(_factories()["rgb"], x, ["gradcam", "guided_backprop"])
    for stem in ("move", "frames"):
        row = rows[stem]
        assert (row["kind"], row["frames"], row["source_frames"]) == ("video", 4, 8)
        assert row["class_id"] == int(expected.classes[0])
        assert row["score"] == pytest.approx(float(expected.scores[0]), abs=1e-5)
        with np.load(out / f"{stem}-nets-rgb-maps.npz") as saved:
            assert saved["frame_indices"].tolist() == indices
            np.testing.assert_allclose(saved["clip/gradcam"], expected["gradcam"][0].numpy(), atol=1e-5)
            np.testing.assert_allclose(saved["clip/guided_backprop"], expected["guided_backprop"][0].numpy(),
                                       atol=1e-6)  # fmt: skip
            cam = saved["clip/gradcam"]
        assert cam.shape == (4, 32, 32) and cam.min() == 0.0 and cam.max() == pytest.approx(1.0)  # over the clip
        # the animated overlay has a frame per sampled frame; the strip shows each map over its own frame
        with Image.open(out / f"{stem}-nets-rgb-gradcam.gif") as animated:
            assert animated.n_frames == 4 and animated.size == (32, 32)
        strip = np.asarray(Image.open(out / f"{stem}-nets-rgb-gradcam-strip.png").convert("RGB")).astype(float)
        assert strip.shape == (32, 4 * 32 + 3 * 2, 3)
        for k, t in enumerate(indices):
            cell = strip[:, k * 34 : k * 34 + 32]
            heat = 2 * cell - clips["frames"][t]  # overlay = (frame + heat) / 2, rounded
            assert np.abs(heat - colorize(cam[k]).astype(float)).max() <= 2.0
        assert sorted(row["files"]) == sorted(f"{stem}-nets-rgb-{n}" for n in (
            "gradcam.gif", "gradcam-strip.png", "guided_backprop.gif", "guided_backprop-strip.png", "maps.npz"))
    # the same command again: every clip done is skipped (resumed), only the bad ones are redone
    code = main([
        "explain", str(clips["gif"]), str(clips["folder"]), "--frame-folders", "--model", f"{clips['model']}:rgb",
        "--input-size", "32", "--frames", "4", "--methods", "gradcam", "guided_backprop", "--save-maps",
        "--output-dir", str(out),
    ])  # fmt: skip
    assert code == 0 and "2 done before (resumed)" in capsys.readouterr().out


def test_a_volume_through_a_3d_cnn_gives_a_montage_of_slices_and_the_librarys_maps(clips, tmp_path, capsys):
    rng = np.random.default_rng(0)
    volume = rng.random((6, 16, 16)).astype(np.float32)
    volume[2:4, 4:10, 4:10] += 2.0
    path = tmp_path / "scan.npy"
    np.save(path, volume)
    wrong = tmp_path / "colour.npy"
    np.save(wrong, np.zeros((3, 6, 16, 16), np.float32))  # three channels: the model takes one
    out = tmp_path / "out"
    code = main(["explain", str(path), str(wrong), "--model", f"{clips['model']}:grey", "--input-size", "16",
                 "--methods", "gradcam", "layercam", "--save-maps", "--json", "--output-dir", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2
    errors = [line for line in captured.err.splitlines() if line.startswith("camlens: error:")]
    assert len(errors) == 1 and "colour.npy has 3 channels" in errors[0] and "takes 1" in errors[0]
    printed = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    assert [(p["stem"], p["status"]) for p in printed] == [("scan", "ok"), ("colour", "error")]
    x = torch.from_numpy(volume)[None, None]  # one channel: mean 0, std 1, values as stored
    expected = _expected(_factories()["grey"], x, ["gradcam", "layercam"])
    row = _rows(out)["scan"]
    assert (row["kind"], row["frames"], row["source_frames"]) == ("volume", 6, 6)
    assert row["class_id"] == int(expected.classes[0])
    with np.load(out / "scan-nets-grey-maps.npz") as saved:
        for m in ("gradcam", "layercam"):
            np.testing.assert_allclose(saved[f"clip/{m}"], expected[m][0].numpy(), atol=1e-5)
    assert sorted(row["files"]) == ["scan-nets-grey-gradcam-slices.png", "scan-nets-grey-layercam-slices.png",
                                    "scan-nets-grey-maps.npz"]  # fmt: skip
    montage = np.asarray(Image.open(out / "scan-nets-grey-gradcam-slices.png").convert("RGB"))
    assert montage.shape == (2 * 16 + 2, 3 * 16 + 2 * 2, 3)  # 6 slices: 2 rows of 3
    cam = expected["gradcam"][0].numpy()
    # the cell of the slice whose map has the most mass is the reddest (jet: high = red)
    redness = [montage[r * 18 : r * 18 + 16, c * 18 : c * 18 + 16, 0].astype(float).mean()
               - montage[r * 18 : r * 18 + 16, c * 18 : c * 18 + 16, 2].astype(float).mean()
               for r in range(2) for c in range(3)]  # fmt: skip
    assert int(np.argmax(redness)) == int(np.argmax(cam.sum(axis=(1, 2))))


def test_mp4_and_gif_through_r3d_18_with_random_weights(clips, tmp_path, capsys):
    av = pytest.importorskip("av")
    mp4 = tmp_path / "walk.mp4"
    with av.open(str(mp4), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for frame in clips["frames"]:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "out"
    code = main(["explain", str(mp4), str(clips["gif"]), "--network", "r3d_18", "--random-weights", "--input-size",
                 "32", "--methods", "gradcam", "--output-dir", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "explained 2 clips, 0 failed" in captured.out and "video: 8 of its 8 frames" in captured.out
    rows = _rows(out)
    for stem in ("walk", "move"):
        assert (rows[stem]["status"], rows[stem]["frames"], rows[stem]["source_frames"]) == ("ok", 8, 8)
        assert len(rows[stem]["topk"]) == 5 and rows[stem]["class_name"]  # Kinetics-400's names
        with Image.open(out / f"{stem}-r3d_18-gradcam.gif") as animated:
            assert animated.n_frames == 8
        strip = Image.open(out / f"{stem}-r3d_18-gradcam-strip.png")
        assert strip.size == (8 * 32 + 7 * 2, 32)


def test_clip_options_are_refused_with_an_image_network(tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    code = main(["explain", str(image), "--frames", "4", "--output-dir", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("camlens: error: --frames is for clips")



def test_a_video_transformer_is_explained_at_its_tokens_through_the_cli(clips, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["explain", str(clips["gif"]), "--model", f"{clips['model']}:mvit", "--input-size", "32", "--frames",
                 "4", "--methods", "gradcam", "--save-maps", "--output-dir", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "layer blocks.1.norm1" in captured.out and "2 x 8 x 8 grid" in captured.out  # before the pooling
    indices = [0, 2, 5, 7]
    x = torch.from_numpy(clips["frames"][indices].astype(np.float32) / 255.0).permute(3, 0, 1, 2)[None]
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    expected = _expected(_factories()["mvit"], x, ["gradcam"])
    assert expected.target_layer == "blocks.1.norm1"
    row = _rows(out)["move"]
    assert (row["status"], row["frames"], row["class_id"]) == ("ok", 4, int(expected.classes[0]))
    with np.load(out / "move-nets-mvit-maps.npz") as saved:
        np.testing.assert_allclose(saved["clip/gradcam"], expected["gradcam"][0].numpy(), atol=1e-5)
    # the CSV and Parquet tables carry what the clip was, as the JSONL does
    import csv

    csv_row = next(csv.DictReader((out / "results.csv").open()))
    assert (csv_row["kind"], csv_row["frames"], csv_row["source_frames"]) == ("video", "4", "8")
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.read_parquet(out / "results.parquet")
    assert pd.api.types.is_integer_dtype(frame["frames"]) and pd.api.types.is_integer_dtype(frame["source_frames"])
    assert (frame["kind"][0], frame["frames"][0], frame["source_frames"][0]) == ("video", 4, 8)
