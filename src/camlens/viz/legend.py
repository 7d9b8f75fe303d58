"""A segmentation mask as a picture: each class's colour blended over the photo, and a legend of the classes
shown (colour, name, pixel share). Numpy and PIL only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from camlens.viz.annotate import load_font


def palette(count: int) -> np.ndarray:
    """``(count, 3)`` uint8 colours, PASCAL VOC's (class 0 black, 1 dark red, 2 dark green, ...): the bits of
    the class id spread over the three channels, high bits first.

    Example:
        >>> palette(3).tolist()
        [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    """
    colours = np.zeros((count, 3), dtype=np.uint8)
    for index in range(count):
        value, c = index, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                c[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        colours[index] = c
    return colours


def mask_picture(
    rgb: np.ndarray, mask: np.ndarray, names: Sequence[str], shares: Sequence[float] | None = None, alpha: float = 0.5
) -> np.ndarray:
    """The photo with each pixel's class colour blended over it (``mask``: ``(H, W)`` class ids at the photo's
    size), and below it a legend of the classes present: swatch, name and (with ``shares``, one per name)
    the class's share of the pixels. ``names[k]`` is class ``k``'s name."""
    height, width = rgb.shape[:2]
    ids = np.unique(mask)
    colours = palette(max(int(mask.max()) + 1, len(names)))
    blended = rgb.astype(np.float32) * np.float32(1 - alpha) + np.float32(alpha) * colours[mask].astype(np.float32)
    picture = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    font_size = int(np.clip(width / 32, 10, 24))
    row = font_size + 6
    per_line = max(1, width // max(font_size * 9, 1))
    lines = -(-len(ids) // per_line)
    canvas = Image.new("RGB", (width, height + lines * row + 4), "white")
    canvas.paste(Image.fromarray(picture), (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = load_font(font_size)
    cell = width // per_line
    for n, class_id in enumerate(int(i) for i in ids):
        x, y = (n % per_line) * cell + 4, height + 2 + (n // per_line) * row
        draw.rectangle([x, y + 2, x + font_size, y + 2 + font_size - 2], fill=tuple(int(v) for v in colours[class_id]),
                       outline="black")  # fmt: skip
        name = names[class_id] if class_id < len(names) else f"class {class_id}"
        text = name if shares is None else f"{name} {100 * shares[class_id]:.0f}%"
        while len(text) > 3 and draw.textlength(text, font=font) > cell - font_size - 12:
            text = text[:-2] + "…"
        draw.text((x + font_size + 4, y), text, fill="black", font=font)
    return np.asarray(canvas)
