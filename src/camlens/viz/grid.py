"""A labelled table of pictures (the ``compare`` figure). PIL only."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont


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
