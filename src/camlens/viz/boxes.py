"""Boxes drawn over a picture, each with a caption (a detector's class name and score). Numpy and PIL only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from camlens.viz.annotate import load_font

#: Box colours, by class id modulo their count (distinct on photos and on the jet colour map's blue).
BOX_COLOURS = (
    (255, 56, 56), (50, 205, 50), (255, 157, 151), (255, 178, 29), (207, 210, 49), (72, 249, 10), (146, 204, 23),
    (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (0, 194, 255), (52, 69, 147), (100, 115, 255),
    (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255), (255, 149, 200), (255, 55, 199),
)  # fmt: skip


def box_colour(label: int) -> tuple[int, int, int]:
    """The colour of class ``label``'s boxes (a grey for a negative label: a reference box nothing matched).

    Example:
        >>> box_colour(0), box_colour(-1)
        ((255, 56, 56), (160, 160, 160))
    """
    return (160, 160, 160) if label < 0 else BOX_COLOURS[label % len(BOX_COLOURS)]


def draw_boxes(
    rgb: np.ndarray,
    boxes: Sequence[Sequence[float]],
    captions: Sequence[str],
    labels: Sequence[int] | None = None,
) -> np.ndarray:
    """``rgb`` ``(H, W, 3)`` uint8 with each box (x1, y1, x2, y2 in its pixels) drawn as a rectangle in its class's
    colour (``labels``; default: the box's index) and its caption on a filled strip at its top left corner
    (inside the picture: below the box's top edge where there is no room above it). A caption that would cover
    more than a sixth of the picture's height or half its width is left out (a tiny image shows its boxes only).
    A new array."""
    height, width = rgb.shape[:2]
    canvas = Image.fromarray(np.ascontiguousarray(rgb[..., :3]).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    line = max(1, round(min(height, width) / 160))
    font_size = int(np.clip(min(height, width) / 24, 8, 20))
    font = load_font(font_size)
    for k, (box, caption) in enumerate(zip(boxes, captions, strict=True)):
        colour = box_colour(k if labels is None else int(labels[k]))
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = sorted((min(max(x1, 0.0), width - 1.0), min(max(x2, 0.0), width - 1.0)))
        y1, y2 = sorted((min(max(y1, 0.0), height - 1.0), min(max(y2, 0.0), height - 1.0)))
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line)
        if not caption:
            continue
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        text_w, text_h = right - left + 4, bottom - top + 4
        if text_h > height / 6 or text_w > width / 2:
            continue  # a picture too small for its captions: the boxes only (the table names them)
        tx = min(x1, max(0.0, width - text_w))
        ty = y1 - text_h if y1 - text_h >= 0 else min(y1 + line, max(0.0, height - text_h))
        draw.rectangle([tx, ty, tx + text_w, ty + text_h], fill=colour)
        dark = sum(colour) > 420  # black text on a light strip
        draw.text((tx + 2 - left, ty + 2 - top), caption, fill="black" if dark else "white", font=font)
    return np.asarray(canvas)
