"""Train seed 002's CIFAR-10 network offline, on a synthetic 10-class task, and save its weights.

CIFAR-10 itself cannot be downloaded here, so the network learns a task whose evidence sits at known
pixels: a 32 x 32 noisy grey image holds one 7 x 7 coloured square at a random place, and the class is
the square's colour. A correct explanation of this network must point at the square.

    python examples/train_cifar_net.py                      # writes examples/patch_net.pt (about 250 kB)
    camlens explain examples/patch_red.png --model examples/cifar_net.py:net \\
        --weight-path examples/patch_net.pt --input-size 32 --mean 0.5 0.5 0.5 --std 0.5 0.5 0.5 \\
        --labels examples/patch_labels.txt --methods gradcam gradcam++ --annotate

Runs in about half a minute on two CPU cores; the same seed gives the same weights.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
COLOURS = {  # class name -> RGB in [0, 1]
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.8, 0.1),
    "blue": (0.1, 0.2, 0.9),
    "yellow": (0.9, 0.9, 0.1),
    "cyan": (0.1, 0.9, 0.9),
    "magenta": (0.9, 0.1, 0.9),
    "orange": (1.0, 0.55, 0.0),
    "purple": (0.5, 0.1, 0.6),
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
}
SIDE, PATCH = 32, 7


def make_images(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` images (N, 3, 32, 32) in [0, 1], their classes (N,) and the squares' corners (N, 2)."""
    g = torch.Generator().manual_seed(seed)
    images = 0.5 + 0.12 * torch.randn(count, 1, SIDE, SIDE, generator=g).expand(count, 3, SIDE, SIDE)
    images = images.clone()
    classes = torch.randint(0, len(COLOURS), (count,), generator=g)
    corners = torch.randint(0, SIDE - PATCH + 1, (count, 2), generator=g)
    table = torch.tensor(list(COLOURS.values()))
    for i in range(count):
        y, x = corners[i].tolist()
        images[i, :, y : y + PATCH, x : x + PATCH] = table[classes[i]].view(3, 1, 1)
    return images.clamp(0, 1), classes, corners


def load_net() -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("cifar_net", HERE / "cifar_net.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.net()


def train(steps: int = 600, seed: int = 0) -> tuple[torch.nn.Module, float]:
    """Train the network; returns it and its accuracy on 1,000 fresh images."""
    torch.manual_seed(seed)
    model = load_net()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    images, classes, _ = make_images(8000, seed)
    inputs = (images - 0.5) / 0.5
    order = torch.randperm(len(inputs))
    for step in range(steps):
        index = order[(step * 64) % len(inputs) :][:64]
        loss = F.cross_entropy(model(inputs[index]), classes[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    test_images, test_classes, _ = make_images(1000, seed + 1)
    with torch.no_grad():
        accuracy = (model((test_images - 0.5) / 0.5).argmax(1) == test_classes).float().mean().item()
    return model.eval(), accuracy


def save_example(path: Path, colour: str, corner: tuple[int, int], seed: int = 7) -> None:
    """A single example image (PNG, 32 x 32) with a square of ``colour`` at ``corner`` (y, x)."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    image = (0.5 + 0.12 * torch.randn(1, SIDE, SIDE, generator=g)).expand(3, SIDE, SIDE).clone()
    y, x = corner
    image[:, y : y + PATCH, x : x + PATCH] = torch.tensor(COLOURS[colour]).view(3, 1, 1)
    array = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    Image.fromarray(array).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(HERE / "patch_net.pt"))
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    model, accuracy = train(args.steps)
    torch.save(model.state_dict(), args.output)
    (HERE / "patch_labels.txt").write_text("\n".join(COLOURS) + "\n", encoding="utf-8")
    save_example(HERE / "patch_red.png", "red", (20, 4))
    print(f"accuracy on 1,000 new images: {accuracy:.3f}; weights written to {args.output}")


if __name__ == "__main__":
    main()
