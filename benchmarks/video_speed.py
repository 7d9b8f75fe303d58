"""Grad-CAM on video networks against inference of the same clip, side by side.

    python benchmarks/video_speed.py             # r3d_18, mc3_18, r2plus1d_18 (batch 2 x 3 x 8 x 112 x 112) and
                                                 # mvit_v2_s (on its fixed 16 x 224 x 224 clips), CPU
    python benchmarks/video_speed.py --rounds 3  # fewer rounds
    python benchmarks/video_speed.py --models mvit_v2_s

For each model (random weights): plain inference (``torch.no_grad``) and camlens Grad-CAM at the automatic
3-D layer (chosen once in a warm-up call, then the fast path: no autograd before the layer), timed
round-robin in one run; the headline is the ratio of the medians and the median of the per-round ratios.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torchvision

import camlens

warnings.filterwarnings("ignore")
MODELS = ["r3d_18", "mc3_18", "r2plus1d_18", "mvit_v2_s"]
FIXED_CLIP = {"mvit_v2_s": (16, 224)}  # (frames, size) the network is built for (its relative position tables)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    args = parser.parse_args()
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        frames, size = FIXED_CLIP.get(name, (args.frames, args.size))
        x = torch.rand(args.batch, 3, frames, size, size)
        model = getattr(torchvision.models.video, name)(num_classes=400).eval()
        first = camlens.explain(model, x, ["gradcam"])  # chooses and caches the layer

        def infer(model: torch.nn.Module = model, x: torch.Tensor = x) -> None:
            with torch.no_grad():
                model(x)

        def gradcam(model: torch.nn.Module = model, x: torch.Tensor = x) -> None:
            camlens.explain(model, x, ["gradcam"])

        times: dict[str, list[float]] = {"inference": [], "gradcam": []}
        for r in range(args.rounds + 1):
            for label, fn in (("inference", infer), ("gradcam", gradcam)):
                start = time.perf_counter()
                fn()
                if r:
                    times[label].append(time.perf_counter() - start)
        inference, cam = statistics.median(times["inference"]), statistics.median(times["gradcam"])
        pairs = statistics.median(c / i for c, i in zip(times["gradcam"], times["inference"], strict=True))
        assert first.layout is not None
        shape = " x ".join(str(s) for s in x.shape)
        rows.append((name, shape, first.target_layer, first.layout.describe(), inference, cam, pairs))
        print(f"{name}: {cam / inference:.3f}x", flush=True)
    print(f"\nCPU ({torch.get_num_threads()} threads), {args.rounds} rounds\n")
    print(
        "| model | clip | automatic layer | layout | inference (s) | Grad-CAM (s) | ratio of medians | median ratio |"
    )
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
    for name, shape, layer, layout, inference, cam, pairs in rows:
        times = f"{inference:.3f} | {cam:.3f} | {cam / inference:.3f}x | {pairs:.3f}x"
        print(f"| {name} | {shape} | {layer} | {layout} | {times} |")


if __name__ == "__main__":
    main()
