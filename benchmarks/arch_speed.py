"""Grad-CAM on modern architectures (token and channels-last layouts) against inference, side by side.

    python benchmarks/arch_speed.py            # batch 8, 224 x 224, CPU, random weights
    python benchmarks/arch_speed.py --rounds 3 # fewer rounds

For each model: plain inference (``torch.no_grad``) and camlens Grad-CAM at the automatic layer (chosen
once in a warm-up call, then the fast path: no autograd before the layer), timed round-robin in one
run; the headline is the ratio of the medians and of the per-round pairs. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import timm
import torch

import camlens

warnings.filterwarnings("ignore")
MODELS = ["vit_small_patch16_224", "swin_tiny_patch4_window7_224", "convnext_tiny"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, 224, 224)
    rows = []
    for name in MODELS:
        model = timm.create_model(name, pretrained=False).eval()
        first = camlens.explain(model, x, ["gradcam"])  # chooses and caches the layer

        def infer(model=model):
            with torch.no_grad():
                model(x)

        def gradcam(model=model):
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
        rows.append((name, first.target_layer, first.layout.describe(), inference, cam, cam / inference, pairs))
        print(f"{name}: {cam / inference:.3f}x", flush=True)
    print(f"\nbatch {args.batch}, 224 x 224, CPU ({torch.get_num_threads()} threads), {args.rounds} rounds\n")
    print("| model | automatic layer | layout | inference (s) | Grad-CAM (s) | ratio of medians | median ratio |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for name, layer, layout, inference, cam, ratio, pairs in rows:
        print(f"| {name} | `{layer}` | {layout} | {inference:.3f} | {cam:.3f} | {ratio:.3f} | {pairs:.3f} |")


if __name__ == "__main__":
    main()
