"""Train through a CAM: a loss on where Grad-CAM looks ("right for the right reasons", attention-guided training).

Each class-0 scene holds two cues, a square in the left half and stripes in the right half; class 1 is noise.
Either cue separates the classes. Trained on the classes alone, the model's Grad-CAM spreads over both cues;
with the share of the map's positive mass outside the left half added to the loss
(``camlens.explain(..., create_graph=True)`` makes the map differentiable with respect to the parameters),
the map of new scenes lies on the square.

    python examples/cam_loss.py
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

import camlens
from camlens.errors import ExplanationNote


class Tiny(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> global average pool -> linear, 1 channel in, 2 classes."""

    def __init__(self) -> None:
        super().__init__()
        convs = (nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.features = nn.Sequential(*convs)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def scenes(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """4 scenes of class 0 (a square in the left half, stripes in the right half), then 4 of class 1 (noise)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.rand(8, 1, 16, 16, generator=g)
    for i in range(4):
        r, c = torch.randint(0, 12, (1,), generator=g).item(), torch.randint(0, 4, (1,), generator=g).item()
        x[i, 0, r : r + 4, c : c + 4] += 1.0
        r, c = torch.randint(0, 10, (1,), generator=g).item(), 8 + torch.randint(0, 3, (1,), generator=g).item()
        x[i, 0, r : r + 6, c : c + 6 : 2] += 1.0
    return x, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])


def left_half() -> torch.Tensor:
    mask = torch.zeros(16, 16)
    mask[:, :8] = 1.0
    return mask


def outside(map_: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per image: the share of the map's positive mass outside ``mask`` (differentiable)."""
    positive = torch.relu(map_)
    return (positive * (1 - mask)).flatten(1).sum(1) / (positive.flatten(1).sum(1) + 1e-6)


def train(weight: float, steps: int = 40, seed: int = 0) -> nn.Module:
    """Cross-entropy plus ``weight`` x the class-0 map's share outside the left half, on :func:`scenes` (0)."""
    x, y = scenes(0)
    mask = left_half()
    torch.manual_seed(seed)
    model = Tiny()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(steps):
        optimiser.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        if weight:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExplanationNote)  # early maps may be all zero
                result = camlens.explain(model, x[:4], ["gradcam"], "features", 0, create_graph=True)
            loss = loss + weight * outside(result.raw["gradcam"], mask).mean()
        loss.backward()
        optimiser.step()
    return model


def inside_share(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per image: the share of class 0's positive Grad-CAM mass inside the left half (a plain explain)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExplanationNote)
        raw = camlens.explain(model, x, ["gradcam"], "features", 0).raw["gradcam"]
    return 1 - outside(raw, left_half())


def main() -> None:
    test_x, test_y = scenes(1)
    for weight in (0.0, 1.0):
        model = train(weight)
        accuracy = float((model(test_x).argmax(1) == test_y).float().mean())
        share = inside_share(model, test_x[:4])
        print(f"CAM-loss weight {weight}: accuracy {accuracy:.2f}, map inside the mask {share.mean():.3f}")


if __name__ == "__main__":
    main()
