"""Seg-Grad-CAM of every class of an image against one inference, side by side in one run.

    python benchmarks/segmentation_speed.py              # 1 image, 256 x 256, 21 classes, CPU, random weights
    python benchmarks/segmentation_speed.py --rounds 3 --size 192

For each torchvision segmenter (random weights, batch norms calibrated on one random batch, 21 classes as in
Pascal VOC): plain inference (``torch.no_grad``) and ``camlens.explain_segmentation`` of all 21 classes at once
(``region="image"``, so that every class has a region and a gradient), timed round-robin; the headline is the
ratio of the medians and the median of the per-round ratios. All classes come from one forward pass; their
backward passes run through the part of the network after the automatic layer only, and Grad-CAM alone stops
them at the outputs of the layer's readers (``camlens.segmentation.gradient_sums``: its weights need only the
gradient's spatial sums). The last column is what 21 full per-class gradients at that layer cost in arithmetic:
(forward + 21 x one class's backward to the layer) / forward, in FLOPs counted by ``torch.utils.flop_counter``;
the gradient-sums route does less than that.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn
from torchvision.models import segmentation

import camlens

warnings.filterwarnings("ignore")
MODELS = ["deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "fcn_resnet50"]
CLASSES = 21


def calibrated(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=CLASSES)
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 128, 128))
    return model.eval()


def full_backward_flops(model: nn.Module, x: torch.Tensor, layer_name: str, classes: int) -> tuple[float, float, float]:
    """``(forward GFLOPs, one class's backward GFLOPs from the output to the layer, ratio)``: the ratio is
    ``(forward + classes * backward) / forward``, what full per-class gradients at the layer cost in
    arithmetic (``torch.utils.flop_counter``: convolutions and matmuls; the backward to the activations only)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as forward:
        model(x)
    layer = dict(model.named_modules())[layer_name]
    kept = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: kept.setdefault("a", out.detach().requires_grad_(True)))
    try:
        with torch.enable_grad():
            score = model(x)["out"][:, 0].sum()
            with FlopCounterMode(display=False) as backward:
                torch.autograd.grad(score, [kept["a"]])
    finally:
        handle.remove()
    f, b = forward.get_total_flops() / 1e9, backward.get_total_flops() / 1e9
    return f, b, (f + classes * b) / f


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    every = list(range(CLASSES))
    rows = []
    for name in MODELS:
        model = calibrated(name)
        first = camlens.explain_segmentation(model, x, ["gradcam"], classes=every, region="image")

        def infer(model=model):
            with torch.no_grad():
                model(x)

        def explain(model=model):
            camlens.explain_segmentation(model, x, ["gradcam"], classes=every, region="image")

        def predicted(model=model):
            camlens.explain_segmentation(model, x, ["gradcam"])  # the classes present in the predicted mask

        present = len(camlens.explain_segmentation(model, x, ["gradcam"]).classes)
        times: dict[str, list[float]] = {"inference": [], "explain": [], "predicted": []}
        for r in range(args.rounds + 1):
            for label, fn in (("inference", infer), ("explain", explain), ("predicted", predicted)):
                start = time.perf_counter()
                fn()
                if r:
                    times[label].append(time.perf_counter() - start)
        inference, cam = statistics.median(times["inference"]), statistics.median(times["explain"])
        pairs = statistics.median(c / i for c, i in zip(times["explain"], times["inference"], strict=True))
        few = statistics.median(times["predicted"]) / inference
        full = full_backward_flops(model, x, first.target_layer, CLASSES)[2]
        rows.append((name, first.target_layer, inference, cam, cam / inference, pairs, present, few, full))
        print(f"{name}: {cam / inference:.3f}x; {present} predicted classes {few:.3f}x; full {full:.2f}x", flush=True)
    print(f"\n1 image, {args.size} x {args.size}, {CLASSES} classes, CPU ({torch.get_num_threads()} threads), "
          f"{args.rounds} rounds\n")  # fmt: skip
    print(
        "| model | automatic layer | inference (s) | all 21 class maps (s) | ratio of medians | median ratio "
        "| predicted classes | their ratio | FLOPs of 21 full backward passes / inference |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, layer, inference, cam, ratio, pairs, present, few, full in rows:
        print(
            f"| {name} | `{layer}` | {inference:.3f} | {cam:.3f} | {ratio:.2f}x | {pairs:.2f}x "
            f"| {present} | {few:.2f}x | {full:.2f}x |"
        )


if __name__ == "__main__":
    main()
