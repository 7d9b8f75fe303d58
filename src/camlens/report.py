"""Comparison reports: networks (rows) x pictures (columns) for one image, as PNG, self-contained HTML and
Markdown, plus an index page over several images. Numpy and PIL only.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass
class CompareRow:
    """One network's row for one image."""

    name: str
    prediction: str  # "label (probability)", or why the network is unavailable
    pictures: dict[str, np.ndarray] | None = None  # by suffix; None: unavailable
    layer: str = ""
    explained: str = ""  # "class 285 (Egyptian cat)"
    metrics: dict[str, float] = field(default_factory=dict)
    plain: dict[str, np.ndarray] | None = None  # the pictures without captions (the figure's cells); None: pictures


@dataclass
class CompareTable:
    """The comparison of several networks on one image."""

    stem: str
    rgb: np.ndarray
    columns: list[tuple[str, str]]  # (suffix, header)
    rows: list[CompareRow] = field(default_factory=list)
    colormap: str = "jet"

    @property
    def metric_names(self) -> list[str]:
        names: dict[str, None] = {}
        for row in self.rows:
            names.update(dict.fromkeys(row.metrics))
        return list(names)


def embedded_jpeg(array: np.ndarray, side: int = 224) -> str:
    """A data URI of the picture as a JPEG at most ``side`` pixels on a side."""
    from PIL import Image

    image = Image.fromarray(array)
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _with_direction(key: str) -> str:
    """``method/metric`` with its direction, e.g. ``gradcam/deletion (lower better)``."""
    from camlens.metrics import METRICS

    spec = METRICS.get(key.rsplit("/", 1)[-1])
    return key if spec is None else f"{key} ({'higher' if spec.higher_is_better else 'lower'} better)"


def compare_figure(table: CompareTable) -> object:
    """The comparison as a matplotlib Figure: the network (its prediction, class, layer) on each row, the
    picture's method on each column, no text inside the cells and one colour bar for all of them."""
    from camlens.viz.grid import figure

    cells, labels = [], []
    for row in table.rows:
        pictures = row.plain if row.plain is not None else row.pictures
        cells.append([table.rgb, *(pictures.get(s) if pictures else None for s, _ in table.columns)])
        labels.append(_row_label(row))
    headers = ["image", *(h for _, h in table.columns)]
    guided = any(h.lower().startswith("guided") for h in headers)
    caption = f"{table.stem}: networks x methods" + ("; guided pictures: gradient, grey = 0" if guided else "")
    return figure(cells, labels, headers, caption, table.colormap)


def _row_label(row: CompareRow) -> str:
    from camlens.viz.grid import _wrap

    if row.pictures is None:
        return "\n".join([row.name, *_wrap(row.prediction, 28)[:5]])
    return "\n".join(x for x in (row.name, row.prediction, row.explained, row.layer and f"layer {row.layer}") if x)


def write_compare(folder: Path, table: CompareTable, image_format: str = "jpg") -> list[str]:
    """Write ``<stem>-compare.png/.html/.md``, the original and each row's pictures; returns the file names."""
    from camlens.render import save_picture
    from camlens.viz import grid

    stem, rgb = table.stem, table.rgb
    suffixes = [s for s, _ in table.columns]
    headers = ["original", *(h for _, h in table.columns)]
    metric_names = table.metric_names
    written = []
    try:
        figure = compare_figure(table)
    except ImportError:  # no matplotlib: the same table drawn with PIL (plain cells, labels on rows and columns)
        grid_rows = []
        for row in table.rows:
            plain = row.plain if row.plain is not None else row.pictures
            cells: list[np.ndarray | None] = [rgb]
            cells += [plain.get(s) for s in suffixes] if plain else [None] * len(suffixes)
            grid_rows.append((_row_label(row), cells))
        grid(grid_rows, headers).save(folder / f"{stem}-compare.png")
    else:
        import matplotlib.pyplot as plt

        figure.savefig(folder / f"{stem}-compare.png", dpi=150)  # type: ignore[attr-defined]
        plt.close(figure)  # type: ignore[arg-type]
    original = f"{stem}.{image_format}"
    save_picture(rgb, folder / original)
    written += [f"{stem}-compare.png", original]

    metric_headers = [_with_direction(m) for m in metric_names]
    md = [
        "| network | prediction | explained | " + " | ".join([*(h for _, h in table.columns), *metric_headers]) + " |",
        "|" + " --- |" * (3 + len(table.columns) + len(metric_names)),
    ]
    body = []
    original_uri = embedded_jpeg(rgb)
    for row in table.rows:
        metric_cells = [f"{row.metrics[m]:.3f}" if m in row.metrics else "n/a" for m in metric_names]
        if row.pictures is None:
            md.append(f"| {row.name} | {row.prediction} | n/a |" + " n/a |" * (len(suffixes) + len(metric_names)))
            cells_html = "".join("<td>n/a</td>" for _ in suffixes)
        else:
            for suffix in suffixes:
                name = f"{stem}-{row.name}-{suffix}.{image_format}"
                save_picture(row.pictures[suffix], folder / name)
                written.append(name)
            md.append(
                f"| {row.name} | {row.prediction} | {row.explained} | "
                + " | ".join([*(f"![]({stem}-{row.name}-{s}.{image_format})" for s in suffixes), *metric_cells])
                + " |"
            )
            cells_html = "".join(f'<td><img src="{embedded_jpeg(row.pictures[s])}"></td>' for s in suffixes)
        metric_html = "".join(f"<td>{html.escape(c)}</td>" for c in metric_cells)
        notes = "".join(
            f"<br><small>{html.escape(text)}</small>"
            for text in (
                row.prediction,
                row.explained and f"explained: {row.explained}",
                row.layer and f"layer {row.layer}",
            )
            if text
        )
        body.append(f"<tr><th>{html.escape(row.name)}{notes}</th><td><img src=\"{original_uri}\"></td>"
                    f"{cells_html}{metric_html}</tr>")  # fmt: skip
    (folder / f"{stem}-compare.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["network", *headers, *metric_headers])
    (folder / f"{stem}-compare.html").write_text(
        _page(f"camlens comparison: {stem}", f"<table><tr>{head}</tr>{''.join(body)}</table>"), encoding="utf-8"
    )
    written += [f"{stem}-compare.md", f"{stem}-compare.html"]
    return written


def write_index(folder: Path, tables: list[CompareTable]) -> str:
    """``index.html``: one line per image, linking its comparison page, with each network's prediction."""
    items = []
    for table in tables:
        predictions = "; ".join(f"{row.name}: {row.prediction}" for row in table.rows)
        items.append(
            f'<li><a href="{html.escape(table.stem)}-compare.html"><img src="{embedded_jpeg(table.rgb, 96)}"> '
            f"{html.escape(table.stem)}</a> <small>{html.escape(predictions)}</small></li>"
        )
    (folder / "index.html").write_text(_page("camlens comparisons", f"<ul>{''.join(items)}</ul>"), encoding="utf-8")
    return "index.html"


def _page(heading: str, content: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        + html.escape(heading)
        + "</title><style>body{font-family:sans-serif}td img{width:160px}th{text-align:left;vertical-align:top}"
        "li{list-style:none;margin:6px}li img{width:96px;vertical-align:middle}</style></head>"
        f"<body><h1>{html.escape(heading)}</h1>{content}</body></html>\n"
    )
