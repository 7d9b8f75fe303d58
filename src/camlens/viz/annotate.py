"""Colour maps by name, colour bars and captions on pictures. Numpy and PIL only.

``jet`` is the seeds' classic map (closed form); ``viridis``, ``inferno``, ``magma`` and ``turbo`` are
piecewise-linear over 17 anchors sampled from the published tables; ``gray`` is the identity.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from camlens.viz.colormaps import jet

_ANCHORS: dict[str, list[tuple[int, int, int]]] = {
    "viridis": [(68, 1, 84), (72, 24, 106), (71, 45, 123), (66, 64, 134), (59, 82, 139), (51, 99, 141), (44, 114, 142),
                (38, 130, 142), (33, 145, 140), (31, 160, 136), (40, 174, 128), (63, 188, 115), (94, 201, 98),
                (132, 212, 75), (173, 220, 48), (216, 226, 25), (253, 231, 37)],
    "inferno": [(0, 0, 4), (11, 7, 36), (33, 12, 74), (61, 9, 101), (87, 16, 110), (113, 25, 110), (138, 34, 106),
                (163, 44, 97), (188, 55, 84), (210, 70, 68), (228, 90, 49), (241, 115, 29), (249, 142, 9),
                (252, 172, 17), (249, 203, 53), (242, 234, 105), (252, 255, 164)],
    "magma": [(0, 0, 4), (10, 8, 34), (29, 17, 71), (54, 16, 107), (81, 18, 124), (106, 28, 129), (131, 38, 129),
              (156, 46, 127), (183, 55, 121), (208, 65, 111), (231, 82, 99), (245, 107, 92), (252, 137, 97),
              (254, 167, 114), (254, 196, 136), (253, 226, 163), (252, 253, 191)],
    "turbo": [(48, 18, 59), (64, 64, 162), (70, 107, 227), (66, 148, 255), (40, 188, 235), (24, 221, 194),
              (50, 242, 152), (109, 254, 98), (164, 252, 60), (205, 236, 52), (238, 207, 58), (253, 172, 52),
              (251, 126, 33), (235, 80, 14), (208, 47, 5), (169, 22, 1), (122, 4, 3)],
}  # fmt: skip
COLORMAPS = ("jet", "gray", *_ANCHORS)


def colorize(values: np.ndarray, name: str = "jet") -> np.ndarray:
    """Map values in [0, 1] (any shape) to uint8 RGB with colour map ``name`` (one of :data:`COLORMAPS`).

    Example:
        >>> colorize(np.array([0.0, 1.0]), "gray").tolist()
        [[0, 0, 0], [255, 255, 255]]
    """
    if name == "jet":
        return jet(values)
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    if name == "gray":
        g = (v * 255.0 + 0.5).astype(np.uint8)
        return np.stack([g, g, g], axis=-1)
    if name not in _ANCHORS:
        raise ValueError(f"unknown colour map {name!r}; choose from {', '.join(COLORMAPS)}")
    table = np.asarray(_ANCHORS[name], dtype=np.float32)
    grid = np.linspace(0.0, 1.0, len(table))
    channels = [np.interp(v, grid, table[:, c]) for c in range(3)]
    return (np.stack(channels, axis=-1) + 0.5).astype(np.uint8)


def load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` (its bitmap font where Pillow is older than 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def annotate(picture: np.ndarray, caption: str, colormap: str | None = None, gradient: bool = False) -> np.ndarray:
    """The picture with a title bar above it (``caption``) and, for maps, a colour bar from 0 to 1 below;
    ``gradient=True`` (a guided picture) puts a grey scale from - to + (grey = 0) there instead, so that
    every annotated picture of one image has the same frame and they tile.

    The picture itself is kept pixel for pixel; the bars scale with its width.
    """
    height, width = picture.shape[:2]
    font_size = int(np.clip(width / 40, 10, 28))
    bar = font_size + 10
    if gradient:
        colormap = "gray"
    scale = 0 if colormap is None else font_size + 14
    canvas = Image.new("RGB", (width, height + bar + scale), "white")
    canvas.paste(Image.fromarray(picture), (0, bar))
    draw = ImageDraw.Draw(canvas)
    font = load_font(font_size)
    text = caption
    while len(text) > 4 and draw.textlength(text, font=font) > width - 8:
        text = text[:-2]
    if text != caption:
        text = text[:-1] + "…"
    draw.text((4, 4), text, fill="black", font=font)
    if colormap is not None:
        top = height + bar + 3
        label_width = int(draw.textlength("0", font=font)) + 6
        inner = max(width - 2 * label_width - 8, 4)
        ramp = colorize(np.linspace(0.0, 1.0, inner)[None, :].repeat(max(scale - 8, 2), axis=0), colormap)
        canvas.paste(Image.fromarray(ramp), (label_width + 4, top))
        low, high = ("-", "+") if gradient else ("0", "1")
        draw.text((4, top - 2), low, fill="black", font=font)
        draw.text((label_width + 8 + inner, top - 2), high, fill="black", font=font)
    return np.asarray(canvas)
