"""From one image's maps to the pictures people look at, and their file names.

The seed projects' six pictures keep their names (``heatmap``, ``cam``, ``heatmap++``, ``cam++``, ``gb``,
``cam_gb``); every other CAM method ``m`` gives ``m`` (overlay) and ``m-heatmap``, and any other
image-shaped method ``m`` gives ``m`` as a gradient picture. Files are ``<stem>-<network>-<suffix>.<ext>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from camlens.catalog import ROWS

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

SEED_PICTURES: dict[str, list[tuple[str, str]]] = {  # method -> [(suffix, kind)]
    "gradcam": [("heatmap", "heat"), ("cam", "overlay")],
    "gradcam++": [("heatmap++", "heat"), ("cam++", "overlay")],
    "guided_backprop": [("gb", "gradient")],
    "guided_gradcam": [("cam_gb", "gradient")],
}
SEED_SUFFIXES = ["heatmap", "cam", "heatmap++", "cam++", "gb", "cam_gb"]
METHOD_TITLES = {row.name: row.title for row in ROWS}  # display names, from the catalog
IMAGE_FORMATS = ("jpg", "png")


def picture_kinds(method: str, spatial: bool = True) -> list[tuple[str, str]]:
    """``[(suffix, kind)]`` for ``method``; ``spatial`` says whether its map is ``(H, W)`` (else ``(C, H, W)``)."""
    if method in SEED_PICTURES:
        return SEED_PICTURES[method]
    if spatial:
        return [(f"{method}-heatmap", "heat"), (method, "overlay")]
    return [(method, "gradient")]


def title(method: str) -> str:
    """A method's display name."""
    return METHOD_TITLES.get(method, method)


@dataclass(frozen=True)
class Caption:
    """What an annotated picture says: the class explained and the method (and a colour bar for maps)."""

    label: str  # e.g. "Egyptian cat 0.83" or "class 285"
    method: str


def pictures(
    rgb: np.ndarray, maps: Mapping[str, Tensor], caption: str | None = None, colormap: str = "jet", alpha: float = 0.5
) -> dict[str, np.ndarray]:
    """The pictures of one image, by file suffix, from maps already at the image's size.

    ``caption`` (e.g. ``"Egyptian cat 0.83"``) turns on annotation: each picture gets a title bar with the
    caption and the method, and maps get a colour bar.
    """

    from camlens.viz import gradient_image, overlay
    from camlens.viz.annotate import annotate, colorize

    out: dict[str, np.ndarray] = {}
    for method, tensor in maps.items():
        value = tensor.detach().cpu().float()
        spatial = value.dim() == 2
        array = value.numpy() if spatial else value.permute(1, 2, 0).contiguous().numpy()  # (H, W, C), contiguous
        heat = None  # coloured once, for the heatmap and the overlay
        for suffix, kind in picture_kinds(method, spatial):
            if kind in ("heat", "overlay"):
                heat = colorize(array, colormap) if heat is None else heat
                picture = heat if kind == "heat" else overlay(rgb, heat, alpha)
            else:
                picture = gradient_image(array)
            if caption is not None:
                name = title(method) + (" heatmap" if kind == "heat" else "")
                gradient = kind == "gradient"  # same frame as the maps' (a signed grey scale): the pictures tile
                picture = annotate(picture, f"{caption} | {name}", None if gradient else colormap, gradient=gradient)
            out[suffix] = picture
    return out


def save_picture(array: np.ndarray, path: Any) -> None:
    """Write a uint8 RGB array as JPEG (quality 92) or PNG, by the path's suffix."""
    from PIL import Image

    image = Image.fromarray(array)
    if str(path).lower().endswith((".jpg", ".jpeg")):
        image.save(path, quality=92)
    else:
        image.save(path)


def maps_at_size(result: Any, index: int, methods: list[str], size: tuple[int, int]) -> dict[str, Tensor]:
    """One image's maps at ``size`` (its own pixels): CAMs upsampled once from the layer map.

    ``result`` is an :class:`~camlens.explanation.Explanation`; ``index`` picks the image of the batch.
    """
    from camlens.postprocess import cam_to_image
    from camlens.viz import resize_maps

    i = index
    maps: dict[str, Tensor] = {}
    for m in methods:
        if m in result.raw:
            maps[m] = cam_to_image(result.raw[m][i : i + 1].float().cpu(), size)[0]
        elif m != "guided_gradcam":
            maps[m] = resize_maps(result[m][i : i + 1].float().cpu(), size)[0]
    if "guided_gradcam" in methods:
        gradient = maps.get("guided_backprop")
        if gradient is None:  # only Guided Grad-CAM was asked for: its guided gradient is in the capture
            source = result.maps.get("guided_backprop")
            if source is None:
                source = result.capture.input_gradient
            gradient = resize_maps(source[i : i + 1].float().cpu(), size)[0]
        cam = maps.get("gradcam")
        if cam is None:
            cam = cam_to_image(result.raw["gradcam"][i : i + 1].float().cpu(), size)[0]
        maps["guided_gradcam"] = gradient * cam[None]
    return {m: maps[m] for m in methods}


def _spatial_methods(result: Any) -> list[str]:
    return [m for m, v in result.maps.items() if v.dim() == 3]


def rows_of(result: Any, images: Any) -> Any:
    """The images as the result's rows: ``images`` itself, or for a multi-label result (``image_index``, several
    rows per image) the list of each row's image."""
    index = getattr(result, "image_index", None)
    if index is None:
        return images
    items = list(images) if isinstance(images, list | tuple) else [images]
    if len(items) <= int(index.max()):
        raise ValueError(f"{len(items)} images for a multi-label explanation of images 0..{int(index.max())}")
    return [items[i] for i in index.tolist()]


def overlays(
    result: Any, images: Any, method: str | None = None, colormap: str = "jet", alpha: float = 0.5
) -> list[np.ndarray]:
    """Each image with ``method``'s map (default: the first CAM of the result) blended over it, at the
    image's own size. ``images`` are the ones that were explained (paths, PIL images or arrays)."""
    from camlens.images import as_rgbs
    from camlens.viz import overlay
    from camlens.viz.annotate import colorize

    rgbs = as_rgbs(rows_of(result, images))
    if len(rgbs) != len(result.scores):
        raise ValueError(f"{len(rgbs)} images for an explanation of {len(result.scores)}")
    method = method or next(iter(_spatial_methods(result)), None)
    if method is None or method not in result.maps or result.maps[method].dim() != 3:
        raise ValueError(f"no (B, H, W) map named {method!r} in this result; it has {', '.join(result.maps)}")
    out = []
    for i, rgb in enumerate(rgbs):
        heat = maps_at_size(result, i, [method], rgb.shape[:2])[method].numpy()
        out.append(overlay(rgb, colorize(heat, colormap), alpha))
    return out


def save_result(
    result: Any,
    folder: Any,
    images: Any,
    *,
    network: str = "model",
    labels: list[str] | None = None,
    image_format: str = "jpg",
    annotate: bool = True,
    colormap: str = "jet",
) -> list[Any]:
    """Write every method's pictures of every image to ``folder`` (created), as ``camlens explain`` names
    them (``image0-model-cam.jpg`` ...; a path's stem when images are paths). Returns the paths."""
    from pathlib import Path

    from camlens.images import as_rgbs

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = rows_of(result, images)
    sources = images if isinstance(images, list | tuple) else [images]
    rgbs = as_rgbs(images)
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, not {image_format!r}")
    probabilities = None if result.probabilities is None else result.probabilities.cpu()
    written = []
    for i, (source, rgb) in enumerate(zip(sources, rgbs, strict=True)):
        index = getattr(result, "image_index", None)  # a multi-label result: a row per image and label
        stem = Path(source).stem if isinstance(source, str | Path) else f"image{i if index is None else int(index[i])}"
        if index is not None and result.classes is not None:
            stem += f"-class{int(result.classes[i])}"
        maps = maps_at_size(result, i, list(result.maps), rgb.shape[:2])
        cap = None
        if annotate:
            cls = None if result.classes is None else int(result.classes[i])
            name = f"class {cls}" if cls is None or not labels or cls >= len(labels) else labels[cls]
            p = "" if probabilities is None or cls is None else f" {float(probabilities[i, cls]):.2f}"
            cap = "custom target" if cls is None else f"{name}{p}"
        for suffix, picture in pictures(rgb, maps, cap, colormap).items():
            path = folder / f"{stem}-{network}-{suffix}.{image_format}"
            save_picture(picture, path)
            written.append(path)
    return written


def show(result: Any, images: Any, methods: list[str] | None = None, colormap: str = "jet") -> Any:
    """A matplotlib figure: one row per image, the image and each method's overlay (or gradient picture).

    Needs matplotlib (``pip install matplotlib``); in a notebook the figure displays itself.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("camlens.show needs matplotlib: pip install matplotlib") from None
    from camlens.images import as_rgbs

    rgbs = as_rgbs(rows_of(result, images))
    methods = methods or list(result.maps)
    figure, axes = plt.subplots(
        len(rgbs), 1 + len(methods), figsize=(2.6 * (1 + len(methods)), 2.6 * len(rgbs)), squeeze=False
    )
    for i, rgb in enumerate(rgbs):
        maps = maps_at_size(result, i, methods, rgb.shape[:2])
        axes[i][0].imshow(rgb)
        axes[i][0].set_title("image" if result.classes is None else f"class {int(result.classes[i])}")
        for j, method in enumerate(methods, 1):
            wanted = "overlay" if maps[method].dim() == 2 else "gradient"
            suffix = next(s for s, kind in picture_kinds(method, wanted == "overlay") if kind == wanted)
            axes[i][j].imshow(pictures(rgb, {method: maps[method]}, None, colormap)[suffix])
            axes[i][j].set_title(title(method))
    for row in axes:
        for axis in row:
            axis.axis("off")
    figure.tight_layout()
    return figure


def cell_pictures(
    rgb: np.ndarray, maps: dict[str, Tensor], methods: list[str], kind: str = "overlay", colormap: str = "jet",
    alpha: float = 0.5,
) -> list[np.ndarray]:
    """One picture per method for a figure cell, without captions: CAM maps as ``kind`` ('overlay' or
    'heatmap'), image-shaped maps as their gradient picture."""
    if kind not in ("overlay", "heatmap"):
        raise ValueError(f"kind must be 'overlay' or 'heatmap', not {kind!r}")
    out = []
    for method in methods:
        spatial = maps[method].dim() == 2
        wanted = ("overlay" if kind == "overlay" else "heat") if spatial else "gradient"
        suffix = next(s for s, k in picture_kinds(method, spatial) if k == wanted)
        out.append(pictures(rgb, {method: maps[method]}, None, colormap, alpha)[suffix])
    return out


def figure_caption(network: str, layers: list[str], methods: list[str]) -> str:
    """The caption of a grid figure: network and target layer (and what the guided pictures show)."""
    layer = ", ".join(dict.fromkeys(x for x in layers if x)) or "n/a"
    guided = any(m in SEED_PICTURES and SEED_PICTURES[m][0][1] == "gradient" for m in methods)
    note = "; guided pictures: gradient, grey = 0" if guided else ""
    return f"network: {network}, target layer: {layer}{note}"


def figure_grid(
    result: Any,
    images: Any,
    methods: list[str] | None = None,
    *,
    labels: list[str] | None = None,
    network: Any = "model",
    names: list[str] | None = None,
    kind: str = "overlay",
    colormap: str = "jet",
    alpha: float = 0.5,
) -> Any:
    """A figure for a paper: rows = images (x classes), columns = methods, one shared colour bar.

    ``result`` is an :class:`~camlens.explanation.Explanation`, or a list of them (several classes explained on
    the same images: one row per image and class). Row labels name the image (``names``, else the path's
    stem, else ``image i``) and the class (``labels[class]`` and its number); the caption names ``network``
    (a name or a :class:`~camlens.zoo.Network`, whose labels are used when ``labels`` is None) and the
    target layer. CAM maps are drawn as overlays (``kind="heatmap"``: the bare map), guided maps as their
    gradient picture. Returns a matplotlib Figure (save it with ``fig.savefig("grid.pdf")``); needs
    matplotlib (``pip install matplotlib``).
    """
    from pathlib import Path

    from camlens.images import as_rgbs
    from camlens.viz.grid import figure, pyplot

    pyplot()  # says what to install before any work
    results = list(result) if isinstance(result, list | tuple) else [result]
    if not results:
        raise ValueError("figure_grid needs at least one explanation")
    if not isinstance(network, str):
        labels = labels if labels is not None else getattr(network, "labels", None)
        network = getattr(network, "name", type(network).__name__)
    sources = list(images) if isinstance(images, list | tuple) else [images]
    rgbs = as_rgbs(images)
    for r in results:
        if len(rgbs) != len(r.scores):
            raise ValueError(f"{len(rgbs)} images for an explanation of {len(r.scores)}")
    methods = list(methods or results[0].maps)
    for r in results:
        missing = [m for m in methods if m not in r.maps]
        if missing:
            raise ValueError(f"no map named {missing[0]!r} in this result; it has {', '.join(r.maps)}")
    if names is None:
        names = [Path(s).stem if isinstance(s, str | Path) else f"image {i}" for i, s in enumerate(sources)]
    cells, rows = [], []
    for i, rgb in enumerate(rgbs):
        for r in results:
            cells.append(cell_pictures(rgb, maps_at_size(r, i, methods, rgb.shape[:2]), methods, kind, colormap, alpha))
            cls = None if r.classes is None else int(r.classes[i])
            rows.append(f"{names[i]}\n{class_label(cls, labels)}")
    caption = figure_caption(str(network), [str(r.target_layer) for r in results], methods)
    return figure(cells, rows, [title(m) for m in methods], caption, colormap)


def class_label(cls: int | None, labels: list[str] | None = None) -> str:
    """``"Egyptian cat (285)"``, ``"class 285"`` without labels, ``"custom target"`` without a class."""
    if cls is None:
        return "custom target"
    return f"{labels[cls]} ({cls})" if labels and 0 <= cls < len(labels) else f"class {cls}"


def grid_target(value: str, output_dir: Any) -> tuple[Any, tuple[str, ...]]:
    """Where ``explain --grid VALUE`` writes: ``(base path, formats)``. VALUE is formats (``png,svg,pdf``:
    ``<output_dir>/grid.<format>``) or a path whose suffix names the one format (``fig/cats.pdf``)."""
    from pathlib import Path

    from camlens.viz.grid import FIGURE_FORMATS

    path = Path(value)
    if path.suffix.lower().lstrip(".") in FIGURE_FORMATS:
        return path.with_suffix(""), (path.suffix.lower().lstrip("."),)
    formats = tuple(dict.fromkeys(f.strip().lower() for f in value.split(",") if f.strip()))
    bad = [f for f in formats if f not in FIGURE_FORMATS]
    if bad or not formats:
        raise ValueError(
            f"--grid takes formats ({','.join(FIGURE_FORMATS)}) or a path ending in one of them, not {value!r}"
        )
    return Path(output_dir) / "grid", formats


class GridCollector:
    """Collects a run's images (``run``'s ``on_result`` results) as the cells of one grid figure."""

    def __init__(self, methods: list[str], colormap: str = "jet", cell_pixels: int = 448) -> None:
        self.methods, self.colormap, self.cell_pixels = list(methods), colormap, cell_pixels
        self.cells: list[list[np.ndarray]] = []
        self.rows: list[str] = []
        self.layers: list[str] = []

    def add(self, result: Any) -> None:
        """Keep one image's cells (shrunk to ``cell_pixels``; not its maps)."""
        import numpy as np
        from PIL import Image

        if not result.ok or result.rgb is None:
            return
        row = []
        for picture in cell_pictures(result.rgb, result.maps, self.methods, "overlay", self.colormap):
            thumb = Image.fromarray(picture)
            thumb.thumbnail((self.cell_pixels, self.cell_pixels))
            row.append(np.asarray(thumb))
        self.cells.append(row)
        name = result.class_name and f"{result.class_name} ({result.class_id})"
        cls = "custom target" if result.class_id is None else name or f"class {result.class_id}"
        self.rows.append(f"{result.stem}\n{cls}")
        self.layers.append(result.layer or "")

    def save(self, network: str, base: Any, formats: tuple[str, ...]) -> list[Any]:
        """Write the figure as ``<base>.<format>``; returns the paths (none when no image was explained)."""
        from camlens.viz.grid import figure, pyplot, save_figure

        if not self.cells:
            return []
        fig = figure(self.cells, self.rows, [title(m) for m in self.methods],
                     figure_caption(network, self.layers, self.methods), self.colormap)  # fmt: skip
        try:
            return save_figure(fig, base, formats)
        finally:
            pyplot().close(fig)
