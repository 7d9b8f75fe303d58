"""The attention methods' cost against plain inference on a ViT-Small-like model, in one run.

Contenders are timed round-robin (each round times every contender once, back to back) and the table
gives medians over the rounds, so load on the shared machine hits all of them alike. ``inference`` is
``model(x)`` under ``torch.no_grad()``; the methods are the pure functions of
:mod:`camlens.methods.attention` (and LeGrad through ``explain``). Random weights: timing does not depend
on their values.

    python benchmarks/attention_speed.py                       # vit_small, 12 blocks, batch 8, 112 px
    python benchmarks/attention_speed.py --size 224 --rounds 5

``floor`` is one recorded forward and one backward of the scores to the input (input gradients only): the least
that any method reading the score's gradient at every block (generic attention, AttnLRP, LeGrad) must do, so
their ceiling is measured against it as well as against inference.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import timm
import torch

import camlens
from camlens.methods.attention import attention_rollout, attnlrp, generic_attention, transformer_attribution

CLAIMS = {"attention_rollout": 1.1, "generic_attention": 1.5, "attnlrp": 1.5}  # the ceilings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_small_patch16_224", pretrained=False, img_size=args.size, depth=args.depth, num_classes=1000
    ).eval()
    x = torch.rand(args.batch, 3, args.size, args.size)
    targets = list(range(args.batch))

    def inference() -> None:
        with torch.no_grad():
            model(x)

    def inference_with_autograd() -> None:
        model(x)

    def gradient_floor() -> None:
        # the least a method that reads the score's gradient at the first block can do: one recorded forward and
        # one backward through every block (input gradients only, as autograd.grad computes)
        inputs = x.clone().requires_grad_(True)
        scores = model(inputs)[torch.arange(len(targets)), targets]
        torch.autograd.grad(scores.sum(), inputs)

    contenders: dict[str, Callable[[], object]] = {
        "inference": inference,
        "forward with autograd on": inference_with_autograd,
        "floor: forward + backward to the input": gradient_floor,
        "attention_rollout": lambda: attention_rollout(model, x),
        "generic_attention": lambda: generic_attention(model, x, targets),
        "attnlrp": lambda: attnlrp(model, x, targets),
        "transformer_attribution": lambda: transformer_attribution(model, x, targets),
        "legrad (explain)": lambda: camlens.explain(model, x, ["legrad"], targets=targets),
    }
    for run in contenders.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["inference"])
    tokens = (args.size // 16) ** 2 + 1
    print(
        f"vit_small_patch16 ({args.depth} blocks, {tokens} tokens), batch {args.batch}, {args.size}x{args.size}, "
        f"CPU, {torch.get_num_threads()} threads; medians of {args.rounds} round-robin rounds\n"
    )
    floor = statistics.median(times["floor: forward + backward to the input"])
    print("| contender | median s | x inference | x floor | ceiling |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, values in times.items():
        median = statistics.median(values)
        ceiling = f"<= {CLAIMS[name]}" if name in CLAIMS else ""
        print(f"| {name} | {median:.3f} | {median / base:.2f} | {median / floor:.2f} | {ceiling} |")


if __name__ == "__main__":
    main()
