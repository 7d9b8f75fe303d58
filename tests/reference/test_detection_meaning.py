"""Meaning: a tiny detector trained here on scenes of coloured squares explains each box inside that box.

Each 48 x 48 scene holds three squares (red, green, blue: the class is the colour) at known boxes. The detector
is CenterNet-like: a small CNN whose stride-2 heat map has one channel per class, a box being a local maximum
(the square's size is fixed, so the box is its centre +- 6 px). It is trained in the test (a few seconds) and
wrapped by a :class:`camlens.detection.DetectorAdapter`. For Grad-CAM and ODAM, each ground-truth box's map
(matched to the detector's box by IoU and class) must put at least 70% of its mass inside its own box and less
than 20% inside the other boxes; D-RISE's maps peak inside their box and keep < 20% on the others (its blur
keeps it under 70% inside: see the test).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from camlens.detection import DetectorAdapter, explain_detections
from camlens.metrics import boxes_to_masks, energy_pointing_game, pointing_game

SIZE = 48
SIDE = 12
STRIDE = 2
COLOURS = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]])


def scenes(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` scenes ``(count, 3, 48, 48)`` and their boxes ``(count, 3, 4)`` (class c's square is box c)."""
    images = 0.1 * torch.rand(count, 3, SIZE, SIZE, generator=generator)
    boxes = torch.zeros(count, 3, 4)
    cells = SIZE // 16  # a 3 x 3 grid of 16 px cells: each square in its own cell, never overlapping
    for i in range(count):
        where = torch.randperm(cells * cells, generator=generator)[:3]
        for c in range(3):
            row, col = divmod(int(where[c]), cells)
            # even corners: the square's centre x + 6 is a cell corner of the stride-2 grid
            y = row * 16 + 2 * int(torch.randint(0, (16 - SIDE) // 2 + 1, (1,), generator=generator))
            x = col * 16 + 2 * int(torch.randint(0, (16 - SIDE) // 2 + 1, (1,), generator=generator))
            images[i, :, y : y + SIDE, x : x + SIDE] = COLOURS[c][:, None, None]
            boxes[i, c] = torch.tensor([x, y, x + SIDE, y + SIDE], dtype=torch.float32)
    return images, boxes


def heat_targets(boxes: torch.Tensor) -> torch.Tensor:
    """Gaussian peaks (sigma one cell) at each square's centre cell on the stride-2 grid: ``(count, 3, 24, 24)``.

    The centre cell of a square whose centre is at pixel ``2c`` is cell ``c`` (the decoder's inverse)."""
    grid = SIZE // STRIDE
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2 / STRIDE  # (count, 3, 2) in cell units
    ys = torch.arange(grid).view(1, 1, -1, 1).float()
    xs = torch.arange(grid).view(1, 1, 1, -1).float()
    d2 = (xs - centre[..., 0, None, None]) ** 2 + (ys - centre[..., 1, None, None]) ** 2
    return torch.exp(-d2 / 2)


class TinyCenterNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # receptive field 21 px > the 12 px square: the centre cell sees all four edges
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=STRIDE, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=2, dilation=2),
            nn.ReLU(),
        )
        self.heat = nn.Conv2d(16, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heat(self.features(x))


def decode(model: nn.Module, images: list[torch.Tensor], threshold: float = 0.3) -> list[dict]:
    """The adapter's forward: local maxima of the sigmoid heat map above ``threshold`` are boxes."""
    heat = torch.sigmoid(model(torch.stack(images)))  # (B, 3, 24, 24)
    peaks = heat == F.max_pool2d(heat, 3, stride=1, padding=1)
    found = []
    for b in range(heat.shape[0]):
        c, y, x = ((peaks[b] & (heat[b] > threshold)).nonzero()).unbind(1)
        centre_x = x.float() * STRIDE
        centre_y = y.float() * STRIDE
        half = SIDE / 2
        boxes = torch.stack([centre_x - half, centre_y - half, centre_x + half, centre_y + half], dim=1)
        scores = heat[b, c, y, x]  # differentiable: the box's class score
        class_scores = heat[b, :, y, x].T  # (n, 3)
        found.append(dict(boxes=boxes, labels=c, scores=scores, class_scores=class_scores))
    return found


ADAPTER = DetectorAdapter(decode, target_layer="features", name="tiny centernet")


def train() -> TinyCenterNet:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    images, boxes = scenes(256, generator)
    targets = heat_targets(boxes)
    model = TinyCenterNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(200):
        index = torch.randint(0, len(images), (16,), generator=generator)
        logits = model(images[index])
        target = targets[index]
        # penalty-reduced focal loss in spirit: positives weighted up, background near the peaks weighted down
        weight = torch.where(target > 0.99, 20.0, (1 - target) ** 4)
        loss = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained() -> TinyCenterNet:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # convolutions this small only lose to threads (several times over on a busy machine)
    try:
        return train()
    finally:
        torch.set_num_threads(threads)


def _shares(result, boxes, method):
    """Per explained box: (its map's mass inside its own box, inside the other boxes, peak inside its box)."""
    found = []
    for i, detections in enumerate(result.detections):
        assert len(detections) == 3
        for c, d in enumerate(detections):
            assert d.index is not None and d.iou >= 0.5, f"image {i}: square {c} was not detected"
            own = boxes_to_masks([[boxes[i, c].tolist()]], (SIZE, SIZE))
            others = boxes_to_masks([[boxes[i, o].tolist() for o in range(3) if o != c]], (SIZE, SIZE))
            m = d.maps[method][None]
            found.append(
                (
                    float(energy_pointing_game(m, own).values[0]),
                    float(energy_pointing_game(m, others).values[0]),
                    bool(pointing_game(m, own, tolerance=0).values[0]),
                )
            )
    return found


def _explain(model, count, method, **options):
    images, boxes = scenes(count, torch.Generator().manual_seed(123))
    result = explain_detections(
        model, list(images), [method], boxes=[b.tolist() for b in boxes], labels=[[0, 1, 2]] * count,
        adapter=ADAPTER, **options,
    )  # fmt: skip
    return _shares(result, boxes, method)


@pytest.mark.slow  # trains the detector (a few seconds on a free core)
@pytest.mark.parametrize("method", ["gradcam", "odam"])
def test_each_box_is_explained_inside_its_own_box(trained, method):
    for inside, elsewhere, _ in _explain(trained, 4, method):
        assert inside >= 0.7, f"{method}: only {inside:.2f} of the mass in its own box"
        assert elsewhere < 0.2, f"{method}: {elsewhere:.2f} of the mass in the other boxes"


@pytest.mark.slow
def test_drise_points_at_its_own_box_and_not_at_the_others(trained):
    """D-RISE's maps peak inside the box and keep < 20% of their mass on the other boxes, but they do NOT reach 70%
    inside their own box: the masks' cells (6 px here) blur each box's evidence into a halo around it, and every
    pixel keeps the mean weight of the masks that show it (about 0.3 of the mass inside at 2000 masks, 0.45 at
    20000 on this scene). Measured, not asserted: see docs/guide/detection.md."""
    for _, elsewhere, hit in _explain(trained, 2, "drise", masks=2000, mask_grid=8, batch_size=1000):
        assert hit, "the D-RISE map's maximum is outside its own box"
        assert elsewhere < 0.2, f"drise: {elsewhere:.2f} of the mass in the other boxes"
