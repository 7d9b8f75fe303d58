"""Labelled tables of pictures: ``grid`` (PIL only) and ``figure`` (matplotlib, imported when called): the
``explain --grid`` figure and the ``compare`` figure, one colour bar for all cells."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from camlens.viz.annotate import load_font


def grid(rows: list[tuple[str, list[np.ndarray | None]]], headers: list[str], cell: int = 160) -> Image.Image:
    """A labelled table of pictures: one row per entry, ``None`` cells drawn as 'n/a'."""
    label_width, header_height, pad = 220, 28, 4
    columns = len(headers)
    width = label_width + columns * (cell + pad) + pad
    height = header_height + len(rows) * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font, small = load_font(15), load_font(13)
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


FIGURE_FORMATS = ("png", "svg", "pdf")


def pyplot() -> Any:
    """matplotlib's pyplot (Agg when no backend was chosen), or an ImportError saying what to install."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("figures need matplotlib: pip install matplotlib (or 'camlens[metrics]')") from None
    return plt


def figure(
    cells: Sequence[Sequence[np.ndarray | None]],
    rows: list[str],
    columns: list[str],
    caption: str = "",
    colormap: str = "jet",
    colorbar_label: str = "map value",
    cell_inches: float = 1.9,
    cell_pixels: int = 448,
) -> Any:
    """A matplotlib Figure: a table of pictures with titles on the columns, labels on the rows, ``caption``
    above, and ONE colour bar (``colormap`` from 0 to 1) for every cell. No text inside the cells; a ``None``
    cell stays empty. Pictures are shrunk to at most ``cell_pixels`` on a side (keeps SVG/PDF small)."""
    plt = pyplot()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    from camlens.viz.annotate import colorize

    n_rows, n_cols = len(cells), len(columns)
    if n_rows == 0 or n_cols == 0:
        raise ValueError("a figure needs at least one row and one column")
    label_inches = 0.3 + 0.07 * max((len(line) for r in rows for line in r.split("\n")), default=0)
    # rows as tall as their pictures (a wide photo gives short rows, not gaps), tall enough for the labels
    shapes = [picture.shape[:2] for row in cells for picture in row if picture is not None]
    aspect = float(np.median([h / w for h, w in shapes])) if shapes else 1.0
    label_lines = max((r.count("\n") + 1 for r in rows), default=1)
    row_inches = max(cell_inches * aspect, 0.16 * label_lines + 0.1)
    fig, all_axes = plt.subplots(
        n_rows, n_cols + 1, squeeze=False, layout="constrained",
        figsize=(label_inches + cell_inches * n_cols + 0.9, 0.6 + row_inches * n_rows),
        gridspec_kw={"width_ratios": [label_inches / cell_inches] + [1.0] * n_cols},
    )  # fmt: skip
    axes = [row[1:] for row in all_axes]
    for r, row in enumerate(cells):
        label_ax = all_axes[r][0]  # the row's label: its own axis left of the cells
        label_ax.axis("off")
        label_ax.text(1.0, 0.5, rows[r], ha="right", va="center", fontsize=8, transform=label_ax.transAxes)
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            picture = row[c] if c < len(row) else None
            if picture is not None:
                thumb = Image.fromarray(picture)
                thumb.thumbnail((cell_pixels, cell_pixels), Image.Resampling.LANCZOS)
                image = ax.imshow(np.asarray(thumb), interpolation="antialiased")
                image.set_gid(f"camlens-cell-{r}-{c}")
            else:
                ax.set_facecolor("#f0f0f0")
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
    table = ListedColormap(colorize(np.linspace(0.0, 1.0, 256), colormap).astype(np.float32) / 255.0, colormap)
    cell_axes = [a for row in axes for a in row]
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), table), ax=cell_axes, shrink=min(0.9, 0.35 + 0.2 * n_rows))
    bar.set_label(colorbar_label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if caption:
        fig.suptitle(caption, fontsize=10)
    return fig


def save_figure(fig: Any, base: Any, formats: tuple[str, ...] | list[str] = FIGURE_FORMATS, dpi: int = 200) -> list:
    """Write ``fig`` as ``<base>.<format>`` for each of ``formats`` (png, svg, pdf); returns the paths."""
    from pathlib import Path

    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        if fmt not in FIGURE_FORMATS:
            raise ValueError(f"figure format must be one of {', '.join(FIGURE_FORMATS)}, not {fmt!r}")
        path = base.with_name(f"{base.name}.{fmt}")
        fig.savefig(path, dpi=dpi, format=fmt)
        written.append(path)
    return written
