"""What the reliability guarantees cost, side by side in one run.

    python benchmarks/reliability.py            # about 3 minutes on 2 cores
    python benchmarks/reliability.py --quick

1. The per-call guard (lock, TorchScript/compile check, buffer snapshot in train mode): ``explain`` with
   the guard against ``explain`` with the guard replaced by a no-op, round-robin medians, in eval mode
   and in train mode; and the guard alone (enter + exit) in microseconds.
2. Huge images: ``read_image`` of a 10,000 x 10,000 PNG and JPEG at the default ``max_side`` (4096)
   against full-size decoding (``max_side=None``, what camlens did before), each in a fresh subprocess
   for its peak memory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

import camlens
import camlens.explanation
from camlens import guard as guard_module


def round_robin(contenders: dict, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(rounds + 1):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


@contextlib.contextmanager
def no_guard():
    real = guard_module.guard

    @contextlib.contextmanager
    def plain(model):
        yield guard_module.Guarded(model, False)

    guard_module.guard = camlens.explanation.guard = plain
    try:
        yield
    finally:
        guard_module.guard = camlens.explanation.guard = real


def guard_cost(rounds: int) -> list[dict]:
    rows = []
    for arch in ("resnet18", "resnet50"):
        model = getattr(torchvision.models, arch)(weights=None).eval()
        x = torch.rand(1, 3, 224, 224)
        for mode in ("eval", "train"):
            model.train(mode == "train")
            batch = x.expand(2, -1, -1, -1).contiguous() if mode == "train" else x

            def guarded(batch=batch, model=model):
                camlens.explain(model, batch, ["gradcam"], "layer4", targets=1)

            def unguarded(batch=batch, model=model):
                with no_guard():
                    camlens.explain(model, batch, ["gradcam"], "layer4", targets=1)

            medians = round_robin({"guarded": guarded, "unguarded": unguarded}, rounds)
            enter = []
            for _ in range(200):
                start = time.perf_counter()
                with guard_module.guard(model):
                    pass
                enter.append(time.perf_counter() - start)
            rows.append(
                {
                    "model": arch,
                    "mode": mode,
                    "explain_guarded_ms": round(medians["guarded"] * 1e3, 2),
                    "explain_unguarded_ms": round(medians["unguarded"] * 1e3, 2),
                    "ratio": round(medians["guarded"] / medians["unguarded"], 3),
                    "guard_alone_us": round(statistics.median(enter) * 1e6, 1),
                }
            )
            print(rows[-1], flush=True)
    return rows


_CHILD = """
import json, resource, sys, time
from camlens.images import read_image
def kib(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))
base = kib("VmRSS")
start = time.perf_counter()
rgb = read_image(sys.argv[1], max_side=None if sys.argv[2] == "none" else int(sys.argv[2]))
print(json.dumps({"shape": rgb.shape, "seconds": round(time.perf_counter() - start, 2),
                  "peak_rss_increase_mib": (kib("VmHWM") - base) // 1024}))
"""


def huge_images() -> list[dict]:
    from PIL import Image, ImageDraw

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        image = Image.new("RGB", (10_000, 10_000), (40, 160, 40))
        ImageDraw.Draw(image).ellipse((2_000, 2_000, 9_000, 7_000), fill=(200, 30, 30))
        image.save(Path(folder) / "huge.png", compress_level=1)
        image.save(Path(folder) / "huge.jpg", quality=90)
        del image
        for name in ("huge.png", "huge.jpg"):
            for max_side in ("none", "4096"):
                out = subprocess.run(
                    [sys.executable, "-c", _CHILD, str(Path(folder) / name), max_side],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rows.append({"file": name, "max_side": max_side, **json.loads(out.stdout)})
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = {"guard": guard_cost(5 if args.quick else 15), "huge_images": huge_images()}
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    (out / "reliability.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
