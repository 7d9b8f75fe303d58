"""Deletion + insertion speed: camlens.metrics against torchcam and Quantus, side by side in one run.

    python benchmarks/metrics.py               # resnet50 (random weights), batch 8, 224 x 224, CPU
    python benchmarks/metrics.py --quick       # resnet18, 64 x 64: a smoke test

Every contender computes the curves for the same model, images and Grad-CAM maps, 1024 pixels per
step (49 steps on 224 x 224), scoring the softmax probability, in batches of 32 perturbed images.
Timed round-robin (each round times every contender once, in turn); medians and ratios of medians
from the same run. Writes ``bench-results/metrics.json``.

What each computes (and where they differ):

* camlens ``deletion`` (to zeros) + ``insertion`` (from RISE's blur): 2 x 50 points per image, of which the
  point that is the clean image itself (0 deleted, all inserted) reuses the clean score: 2 x 49 forwards.
* torchcam ``DeletionInsertionMetric`` (steps=49): both curves from one call; the all-baseline image
  is shared by both curves, its insertion starts from the deletion baseline (zeros), and it recomputes
  its own Grad-CAM first (one forward and backward, a small part of the total).
* Quantus ``PixelFlipping`` (deletion only): it flattens the attribution broadcast over the 3 colour
  channels and removes ``features_in_step`` *values* per step, which must divide H*W; 3 x 1024 does not
  divide 224 * 224, so it runs 1024 values per step, i.e. 147 steps of a third of a pixel-step each
  (3x the forwards), one forward of the B images per step, no point at 0 removed. Compared with
  camlens ``deletion`` alone, in seconds and in seconds per scored image.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torchvision

import camlens
import camlens.metrics as cm

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]


def round_robin(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
            print(f"  {name}: {times[name][-1]:.2f} s", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    arch, size = ("resnet18", 64) if args.quick else ("resnet50", 224)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    x = torch.rand(8, 3, size, size)
    pixels = size * size
    per_step = 64 if args.quick else 1024  # divides H*W: Quantus needs whole steps
    maps = camlens.explain(model, x, ["gradcam"])["gradcam"]

    def ours_both() -> None:
        cm.deletion(model, x, maps, pixels_per_step=per_step)
        cm.insertion(model, x, maps, pixels_per_step=per_step)

    def ours_deletion() -> None:
        cm.deletion(model, x, maps, pixels_per_step=per_step)

    contenders: dict[str, Callable[[], object]] = {"camlens deletion+insertion": ours_both}
    try:
        from torchcam.methods import GradCAM as TorchcamGradCAM
        from torchcam.metrics import DeletionInsertionMetric

        extractor = TorchcamGradCAM(model, "layer4")
        steps = -(-pixels // per_step)

        def torchcam_both() -> None:
            metric = DeletionInsertionMetric(extractor, partial(torch.softmax, dim=-1), steps=steps)
            metric.update(x)
            metric.summary()

        contenders["torchcam deletion+insertion"] = torchcam_both
    except ImportError:
        extractor = None
    contenders["camlens deletion"] = ours_deletion
    try:
        import quantus

        if not hasattr(np, "trapz"):  # Quantus 0.6 computes its AUC with np.trapz, gone from NumPy >= 2.4
            np.trapz = np.trapezoid  # type: ignore[attr-defined]

        x_np, a_np = x.numpy(), maps[:, None].expand_as(x).contiguous().numpy()
        y_np = model(x).argmax(1).detach().numpy()

        def quantus_deletion() -> None:
            metric = quantus.PixelFlipping(
                features_in_step=per_step, disable_warnings=True, display_progressbar=False,
                return_auc_per_sample=True, perturb_baseline="black",
            )  # fmt: skip
            metric(model=model, x_batch=x_np, y_batch=y_np, a_batch=a_np, channel_first=True, device="cpu",
                   softmax=True, batch_size=8)  # fmt: skip

        contenders["quantus PixelFlipping (deletion)"] = quantus_deletion
    except ImportError:
        pass

    with torch.no_grad():
        start = time.perf_counter()
        model(x)
        forward = time.perf_counter() - start
    times = round_robin(contenders, args.rounds)
    if extractor is not None:
        extractor.remove_hooks()
    medians = {name: statistics.median(v) for name, v in times.items()}
    rows = [
        ("camlens deletion+insertion", "torchcam deletion+insertion"),
        ("camlens deletion", "quantus PixelFlipping (deletion)"),
    ]
    print(f"{arch}, batch 8, {size} x {size}, {per_step} pixels per step, {torch.get_num_threads()} threads")
    print(f"one forward of the batch: {forward:.2f} s")
    steps = -(-pixels // per_step)
    scored = {
        # camlens' curves have steps + 1 points; the one that is the clean image reuses its score
        "camlens deletion+insertion": 2 * 8 * steps,
        "torchcam deletion+insertion": 8 * (2 * steps),
        "camlens deletion": 8 * steps,
        "quantus PixelFlipping (deletion)": 8 * 3 * steps,
    }
    print("| contender | median s | rounds | images scored | ms per scored image |")
    print("|---|---|---|---|---|")
    for name, value in medians.items():
        per_image = 1000 * value / scored[name]
        rounds = ", ".join(f"{t:.1f}" for t in times[name])
        print(f"| {name} | {value:.1f} | {rounds} | {scored[name]} | {per_image:.1f} |")
    ratios = {}
    for ours, theirs in rows:
        if ours in medians and theirs in medians:
            ratios[f"{theirs} / {ours}"] = medians[theirs] / medians[ours]
            print(f"{theirs} / {ours}: {medians[theirs] / medians[ours]:.2f}x")
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    record = {"scored": scored, "arch": arch, "size": size, "times": times, "medians": medians, "ratios": ratios,
              "forward_s": forward, "threads": torch.get_num_threads(), "numpy": np.__version__}  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
