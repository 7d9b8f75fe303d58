"""``camlens compare``: every image through every network, one comparison table per image (and an index)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camlens.errors import UsageError
from camlens.pipeline.files import caption, check_output_dir, write_staged
from camlens.pipeline.items import GRADIENT_METHODS, RunOptions
from camlens.pipeline.sources import collect_sources, unique_stems
from camlens.pipeline.worker import check_layer, explain_images, resolve_device

if TYPE_CHECKING:
    from camlens.zoo import Network


@dataclass
class CompareSummary:
    """What :func:`compare` did: one table per image, the files written, and why networks were unavailable."""

    tables: list[Any]  # camlens.report.CompareTable
    files: list[str]
    unavailable: dict[str, str]
    output_dir: Path
    timings: dict[str, float] = field(default_factory=dict)


def compare(
    names: Sequence[str],
    sources: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    load: Callable[[str], Network],
    options: RunOptions = RunOptions(),
    *,
    layers: dict[str, str] | None = None,
) -> CompareSummary:
    """Explain every image with every network; write one comparison table per image (and an index).

    ``load(name)`` builds a network or raises :class:`~camlens.errors.UsageError` (the network becomes an
    "unavailable" row with that reason) or :class:`~camlens.errors.UnknownName` (fatal). ``layers`` maps
    network names to target layers (key ``""``: every network).
    """
    from camlens.errors import UnknownName
    from camlens.images import read_image
    from camlens.render import picture_kinds, pictures, title
    from camlens.report import CompareRow, CompareTable

    out = check_output_dir(output_dir)
    device = resolve_device(options.device)
    paths = collect_sources(sources)
    stems = unique_stems(paths)
    if not options.overwrite:
        clash = [
            f"{s}-compare.{ext}"
            for s in stems
            for ext in ("png", "html", "md")
            if (out / f"{s}-compare.{ext}").exists()
        ]
        if clash:
            raise UsageError(f"{out / clash[0]} exists already: pass --overwrite, or choose another --output-dir")
    timings = {"load": 0.0, "model": 0.0, "io": 0.0}
    t = time.perf_counter()
    rgbs = [read_image(p) for p in paths]
    columns = [
        (suffix, title(m) + (" heatmap" if kind == "heat" else ""))
        for m in options.methods
        for suffix, kind in picture_kinds(m, m not in GRADIENT_METHODS)
    ]
    tables = [CompareTable(stem, rgb, columns) for stem, rgb in zip(stems, rgbs, strict=True)]
    layers = layers or {}
    unavailable: dict[str, str] = {}
    timings["io"] += time.perf_counter() - t
    for name in names:
        t = time.perf_counter()
        try:
            network = load(name)
        except UnknownName:
            raise
        except UsageError as error:
            unavailable[name] = str(error)
            for table in tables:
                table.rows.append(CompareRow(name, f"unavailable: {error}"))
            timings["load"] += time.perf_counter() - t
            continue
        timings["load"] += time.perf_counter() - t
        layer = layers.get(name, layers.get(network.name, layers.get("")))
        check_layer(network, layer, f"{network.name}: ")
        network.model.to(device)
        net_options = RunOptions(**{**asdict(options), "target_layer": layer})
        for start in range(0, len(rgbs), options.batch_size):
            t = time.perf_counter()
            chunk = rgbs[start : start + options.batch_size]
            results = explain_images(network, chunk, net_options, device=device)
            timings["model"] += time.perf_counter() - t
            t = time.perf_counter()
            for table, result in zip(tables[start : start + len(chunk)], results, strict=True):
                prediction = ""
                if result.top:
                    _, label, p = result.top[0]
                    prediction = f"{label} ({p:.2f})"
                explained = "" if result.class_id is None else f"class {result.class_id} ({result.class_name})"
                cap = caption(result) if options.annotate else None
                plain = pictures(result.rgb, result.maps, None, options.colormap)  # type: ignore[arg-type]
                table.rows.append(
                    CompareRow(
                        network.name,
                        prediction,
                        pictures(result.rgb, result.maps, cap, options.colormap) if cap else plain,  # type: ignore[arg-type]
                        result.layer or "",
                        explained,
                        dict(result.metrics),
                        plain=plain,
                    )
                )
            timings["io"] += time.perf_counter() - t
        network.model.cpu()
        del network
    t = time.perf_counter()
    files = write_staged(out, lambda folder: _write_tables(folder, tables, options.image_format))
    timings["io"] += time.perf_counter() - t
    return CompareSummary(tables, files, unavailable, out, timings)


def _write_tables(folder: Path, tables: list[Any], image_format: str) -> list[str]:
    from camlens.report import write_compare, write_index

    files: list[str] = []
    for table in tables:
        files += write_compare(folder, table, image_format)
    if len(tables) > 1:
        files.append(write_index(folder, tables))
    return files
