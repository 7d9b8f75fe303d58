"""EigenCAM's cost against Grad-CAM's on a large layer, with the old and the new decomposition side by side.

The old decomposition took the top eigenvector of the ``(uv, uv)`` Gram matrix (6400 x 6400 in float64
on an 80 x 80 layer); the new one takes the ``(K, K)`` covariance when ``K < uv`` (see
:func:`camlens.methods.activation.first_component`). The old one lives here only, as the comparison.

    python benchmarks/eigencam_speed.py                 # 256 channels, 80 x 80 layer, batch 1
    python benchmarks/eigencam_speed.py --size 40 --channels 512 --repeats 5
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import torch
from torch import Tensor, nn

import camlens
from camlens.methods import activation


def old_first_component(maps: Tensor, reference: Tensor | None = None) -> Tensor:
    """The previous implementation: the top eigenvector of the (uv, uv) Gram matrix."""
    batch, channels, height, width = maps.shape
    matrix = torch.nan_to_num(maps).flatten(2).transpose(1, 2).to(torch.float64)
    centred = matrix - matrix.mean(dim=1, keepdim=True)
    values, vectors = torch.linalg.eigh(centred @ centred.transpose(1, 2))
    projection = (vectors[:, :, -1] * values[:, -1].clamp(min=0).sqrt()[:, None]).view(batch, height, width)
    reference = maps.mean(dim=1) if reference is None else reference
    return activation.orient(projection, reference.to(torch.float64)).to(maps.dtype)


def backbone(channels: int) -> nn.Module:
    """A random-weight detection-like backbone: stride 2 to a ``channels``-channel layer, then a head."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, channels, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, 10),
    ).eval()


def seconds(model: nn.Module, x: Tensor, method: str, repeats: int, warm_up: bool = True) -> tuple[float, Tensor]:
    """Best wall time of ``repeats`` explain calls (after one warm-up), and the raw map."""
    if warm_up:
        camlens.explain(model, x, [method], target_layer="3")
    best, raw = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        raw = camlens.explain(model, x, [method], target_layer="3").raw[method]
        best = min(best, time.perf_counter() - start)
    assert raw is not None
    return best, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=80, help="side of the target layer (input is twice it)")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skip-old", action="store_true", help="do not time the old (uv, uv) decomposition")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = backbone(args.channels)
    x = torch.rand(1, 3, 2 * args.size, 2 * args.size)
    seconds(model, x, "gradcam", 1)  # warm-up
    grad = new = float("inf")
    for _ in range(args.repeats):  # interleaved, best of each: robust to other load on the machine
        grad = min(grad, seconds(model, x, "gradcam", 1, warm_up=False)[0])
        took, new_map = seconds(model, x, "eigencam", 1, warm_up=False)
        new = min(new, took)
    print(f"layer {args.channels} x {args.size} x {args.size}, batch 1, {torch.get_num_threads()} threads")
    print(f"{'':<24s}{'seconds':>10s}{'/ Grad-CAM':>12s}")
    print(f"{'gradcam':<24s}{grad:>10.3f}{1.0:>12.2f}")
    if not args.skip_old:
        with mock.patch.object(activation, "first_component", old_first_component):
            old, old_map = seconds(model, x, "eigencam", 1, warm_up=False)
        print(f"{'eigencam (before, uv x uv)':<24s}{old:>10.3f}{old / grad:>12.2f}")
        a, b = new_map.flatten().double(), old_map.flatten().double()
        corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
        print(f"{'eigencam (after, K x K)':<24s}{new:>10.3f}{new / grad:>12.2f}")
        print(f"correlation of the two maps: {corr:.6f}")
    else:
        print(f"{'eigencam (after, K x K)':<24s}{new:>10.3f}{new / grad:>12.2f}")


if __name__ == "__main__":
    main()
