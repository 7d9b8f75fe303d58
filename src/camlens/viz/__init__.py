"""Pictures from maps: colour maps, overlays, guided-backprop display, grids. Numpy and PIL only.

Maps come in at the image's own size (H x W, [0, 1]); everything here returns ``uint8`` RGB arrays.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont


def jet(values: np.ndarray) -> np.ndarray:
    """The classic 'jet' colour map (blue -> cyan -> yellow -> red) of values in [0, 1], as uint8 RGB."""
    v = np.clip(values.astype(np.float32), 0.0, 1.0)
    red = np.clip(1.5 - np.abs(4.0 * v - 3.0), 0.0, 1.0)
    green = np.clip(1.5 - np.abs(4.0 * v - 2.0), 0.0, 1.0)
    blue = np.clip(1.5 - np.abs(4.0 * v - 1.0), 0.0, 1.0)
    return (np.stack([red, green, blue], axis=-1) * 255.0 + 0.5).astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a colour heatmap over the image (both uint8 RGB of the same size)."""
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * heat.astype(np.float32)
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def gradient_image(gradient: np.ndarray) -> np.ndarray:
    """Guided backprop shown as in the papers: standardise, scale by 0.1, centre on grey, clip.

    ``gradient`` is H x W x 3 (float). A zero gradient is plain grey.
    """
    g = gradient.astype(np.float64)
    g = g - g.mean()
    std = g.std()
    if std > 0:
        g = g / std
    g = np.clip(g * 0.1 + 0.5, 0.0, 1.0)
    return (g * 255.0 + 0.5).astype(np.uint8)


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, H, W)`` or ``(B, C, H, W)`` maps to ``size`` (the original image's)."""
    squeeze = maps.dim() == 3
    batch = maps[:, None] if squeeze else maps
    if tuple(batch.shape[-2:]) != tuple(size):
        batch = F.interpolate(batch.float(), size=size, mode="bilinear", align_corners=False)
    return batch[:, 0] if squeeze else batch


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def grid(rows: list[tuple[str, list[np.ndarray | None]]], headers: list[str], cell: int = 160) -> Image.Image:
    """A labelled table of pictures: one row per entry, ``None`` cells drawn as 'n/a'."""
    label_width, header_height, pad = 220, 28, 4
    columns = len(headers)
    width = label_width + columns * (cell + pad) + pad
    height = header_height + len(rows) * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font, small = _font(15), _font(13)
    for c, header in enumerate(headers):
        draw.text((label_width + c * (cell + pad) + pad, 6), header, fill="black", font=font)
    for r, (label, cells) in enumerate(rows):
        top = header_height + r * (cell + pad) + pad
        for i, line in enumerate(_wrap(label, 26)[:8]):
            draw.text((6, top + 4 + i * 17), line, fill="black", font=small if i else font)
        for c, picture in enumerate(cells):
            left = label_width + c * (cell + pad) + pad
            if picture is None:
                draw.rectangle([left, top, left + cell, top + cell], outline="grey")
                draw.text((left + cell // 2 - 12, top + cell // 2 - 8), "n/a", fill="grey", font=font)
                continue
            thumb = Image.fromarray(picture)
            thumb.thumbnail((cell, cell), Image.Resampling.LANCZOS)
            canvas.paste(thumb, (left + (cell - thumb.width) // 2, top + (cell - thumb.height) // 2))
    return canvas


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        words, line = paragraph.split(), ""
        for word in words:
            if line and len(line) + 1 + len(word) > width:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
    return lines
