"""Folder runs at scale: per-image cost against the in-process explain, and peak memory against folder size.

1. Per-image cost, side by side in one process (bundled EfficientNet-Lite0, the four seed methods, batch 8):
   ``camlens.run.run`` over a folder of N photos of about 512 px (made from examples/*.jpg by crops and
   flips: reading, decoding, the model, maps at the image's size, six JPEG pictures, the table) against
   ``camlens.explain`` on the same images already preprocessed into batches (the model's work alone).
   The two alternate ``--repeat`` times; the best of each counts. Target: ratio <= 1.15.
2. Peak memory (VmHWM) of a subprocess that runs the same folder run over 64 and over 256 images: bounded
   by the batch and queue sizes, it should not grow with the folder.

    PYTHONPATH=src python benchmarks/scale.py            # --images 64 --repeat 2 --memory 64 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def make_photos(
    folder: Path, count: int, side: int = 512, seed: int = 0, sources: list[Image.Image] | None = None
) -> list[Path]:
    """``count`` JPEG photos, about ``side`` px on their long side: random crops (60-100 %) and flips of
    ``sources`` in turn (default: the example photos)."""
    rng = np.random.default_rng(seed)
    if sources is None:
        sources = [Image.open(p).convert("RGB") for p in sorted(EXAMPLES.glob("*.jpg"))]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = sources[i % len(sources)]
        w, h = image.size
        scale = rng.uniform(0.6, 1.0)
        cw, ch = int(w * scale), int(h * scale)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = image.crop((x, y, x + cw, y + ch))
        ratio = side / max(crop.size)
        crop = crop.resize((round(crop.width * ratio), round(crop.height * ratio)), Image.Resampling.BICUBIC)
        if i % 2:
            crop = ImageOps.mirror(crop)
        path = folder / f"photo{i:04d}.jpg"
        crop.save(path, quality=90)
        paths.append(path)
    return paths


def vmhwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def child(folder: str, out: str) -> None:
    """The memory probe: one folder run, then this process's peak resident memory as JSON."""
    from camlens.run import RunOptions, run
    from camlens.zoo import load_network

    network = load_network()
    before = vmhwm_kib()
    summary = run(network, [folder], out, RunOptions(batch_size=8))
    print(json.dumps({"images": len(summary.results), "vmhwm_kib": vmhwm_kib(), "after_load_kib": before}))


def per_image(count: int, repeat: int, work: Path) -> dict[str, float]:
    import torch

    import camlens
    from camlens.images import read_image, to_batch
    from camlens.run import SEED_METHODS, RunOptions, run
    from camlens.zoo import load_network

    folder = work / f"photos{count}"
    paths = make_photos(folder, count)
    network = load_network()
    options = RunOptions(batch_size=8)
    rgbs = [read_image(p) for p in paths]
    batches = [to_batch(rgbs[i : i + 8], network.input_size, network.mean, network.std) for i in range(0, len(rgbs), 8)]
    del rgbs
    # warm-up: both paths once
    camlens.explain(network.model, batches[0], list(SEED_METHODS))
    run(network, [folder], work / "warm", options)
    best = {"explain": float("inf"), "folder": float("inf")}
    for attempt in range(repeat):
        t = time.perf_counter()
        for x in batches:
            camlens.explain(network.model, x, list(SEED_METHODS))
        best["explain"] = min(best["explain"], (time.perf_counter() - t) / count)
        out = work / f"run{attempt}"
        t = time.perf_counter()
        summary = run(network, [folder], out, options)
        best["folder"] = min(best["folder"], (time.perf_counter() - t) / count)
        assert len(summary.results) == count and not summary.failures
        shutil.rmtree(out)
    best["ratio"] = best["folder"] / best["explain"]
    best["threads"] = torch.get_num_threads()
    return best


def memory(counts: list[int], work: Path) -> dict[int, dict[str, int]]:
    found = {}
    for count in counts:
        folder = work / f"memory{count}"
        make_photos(folder, count, seed=count)
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(folder), str(work / f"memory-out{count}")],
            capture_output=True,
            text=True,
            check=True,
        )
        found[count] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--memory", type=int, nargs="*", default=[64, 256])
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(tempfile.mkdtemp(prefix="camlens-scale-"))
    try:
        cpu = platform.processor() or platform.machine()
        print(f"machine: {cpu}, {os.cpu_count()} cores, {platform.system()}, python {sys.version.split()[0]}")
        cost = per_image(args.images, args.repeat, work)
        print(
            f"per image ({args.images} photos ~512 px, batch 8, seed methods, {cost['threads']} threads): "
            f"folder run {cost['folder'] * 1000:.0f} ms, in-process explain {cost['explain'] * 1000:.0f} ms, "
            f"ratio {cost['ratio']:.2f} (target <= 1.15)"
        )
        peaks = memory(args.memory, work)
        for count, peak in peaks.items():
            print(
                f"peak memory, {count} images: {peak['vmhwm_kib'] / 1024:.0f} MiB "
                f"(after loading the model: {peak['after_load_kib'] / 1024:.0f} MiB)"
            )
        if len(peaks) >= 2:
            small, large = peaks[min(peaks)], peaks[max(peaks)]
            print(
                f"peak memory ratio {max(peaks)} / {min(peaks)} images: {large['vmhwm_kib'] / small['vmhwm_kib']:.2f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
