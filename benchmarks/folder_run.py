"""A folder run against the in-process maps, side by side in one process, with and without pictures.

On the same N photos (``skimage.data`` colour photos, crops and flips, resized to 512 px on the long side,
saved as JPEG) and the bundled EfficientNet-Lite0 with the four seed methods, batch 8:

* ``explain``: ``camlens.explain`` on the photos already decoded and preprocessed into batches (the
  model's work alone: the reference);
* ``pictures``: ``camlens.run.run`` on the folder (decoding, the model, the maps at each photo's size,
  the six JPEG pictures of each photo, the table);
* ``no_pictures``: the same with ``pictures=False`` (the maps file of each batch and the table).

The three alternate ``--repeat`` times; the best time of each counts. Targets (issue #25): ``pictures``
<= 1.5x ``explain``, ``no_pictures`` <= 1.15x. Also printed: the megabytes each run wrote.

    PYTHONPATH=src python benchmarks/folder_run.py            # --images 32 --repeat 3 --threads 0 (default)
    PYTHONPATH=src python benchmarks/folder_run.py --profile no_pictures   # cProfile of one run, top 25
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import scale  # benchmarks/scale.py, beside this script: the same photo folder maker
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina", "hubble_deep_field")


def make_photos(folder: Path, count: int, side: int = 512, seed: int = 0) -> list[Path]:
    """``count`` JPEG photos of ``side`` px on the long side: random crops (60-100 %) of skimage's photos, flips."""
    import skimage.data

    sources = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in PHOTOS]
    return scale.make_photos(folder, count, side, seed, sources)


def _megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6


def measure(count: int, repeat: int, batch: int, work: Path, profile: str | None = None) -> dict[str, object]:
    import torch

    import camlens
    from camlens.images import read_image, to_batch
    from camlens.run import SEED_METHODS, RunOptions, run
    from camlens.zoo import load_network

    folder = work / "photos"
    paths = make_photos(folder, count)
    network = load_network()
    rgbs = [read_image(p) for p in paths]
    batches = [
        to_batch(rgbs[i : i + batch], network.input_size, network.mean, network.std) for i in range(0, len(rgbs), batch)
    ]
    del rgbs
    runs = {"pictures": RunOptions(batch_size=batch), "no_pictures": RunOptions(batch_size=batch, pictures=False)}

    def explain() -> None:
        for x in batches:
            camlens.explain(network.model, x, list(SEED_METHODS))

    def folder_run(name: str, out: Path) -> None:
        summary = run(network, [folder], out, runs[name])
        assert len(summary.results) == count and not summary.failures, summary.failures

    explain()  # warm-up: every path once
    for name in runs:
        folder_run(name, work / f"warm-{name}")
    if profile is not None:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        folder_run(profile, work / "profiled")
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    best = {"explain": float("inf"), **{name: float("inf") for name in runs}}
    written = {}
    for attempt in range(repeat):
        t = time.perf_counter()
        explain()
        best["explain"] = min(best["explain"], (time.perf_counter() - t) / count)
        for name in runs:
            out = work / f"{name}{attempt}"
            t = time.perf_counter()
            folder_run(name, out)
            best[name] = min(best[name], (time.perf_counter() - t) / count)
            written[name] = round(_megabytes(out), 2)
            shutil.rmtree(out)
    return {
        "images": count,
        "batch": batch,
        "ms_per_image": {k: round(v * 1000, 1) for k, v in best.items()},
        "ratio_pictures": round(best["pictures"] / best["explain"], 3),
        "ratio_no_pictures": round(best["no_pictures"] / best["explain"], 3),
        "megabytes_written": written,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--profile", choices=("pictures", "no_pictures"), help="print a cProfile of one such run")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="camlens-folder-run-") as work:
        print(json.dumps(measure(args.images, args.repeat, args.batch, Path(work), args.profile), indent=2))


if __name__ == "__main__":
    main()
