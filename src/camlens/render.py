"""From one image's maps to the pictures people look at, and their file names.

The seed projects' six pictures keep their names (``heatmap``, ``cam``, ``heatmap++``, ``cam++``, ``gb``,
``cam_gb``); every other CAM method ``m`` gives ``m`` (overlay) and ``m-heatmap``, and any other
image-shaped method ``m`` gives ``m`` as a gradient picture. Files are ``<stem>-<network>-<suffix>.<ext>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
METHOD_TITLES = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "guided_backprop": "guided backprop",
    "guided_gradcam": "Guided Grad-CAM",
}
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
    rgb: np.ndarray, maps: dict[str, Tensor], caption: str | None = None, colormap: str = "jet", alpha: float = 0.5
) -> dict[str, np.ndarray]:
    """The pictures of one image, by file suffix, from maps already at the image's size.

    ``caption`` (e.g. ``"Egyptian cat 0.83"``) turns on annotation: each picture gets a title bar with the
    caption and the method, and maps get a colour bar.
    """
    import numpy as np

    from camlens.viz import gradient_image, overlay
    from camlens.viz.annotate import annotate, colorize

    out: dict[str, np.ndarray] = {}
    for method, tensor in maps.items():
        array = tensor.detach().cpu().float().numpy()
        spatial = array.ndim == 2
        for suffix, kind in picture_kinds(method, spatial):
            if kind == "heat":
                picture = colorize(array, colormap)
            elif kind == "overlay":
                picture = overlay(rgb, colorize(array, colormap), alpha)
            else:
                picture = gradient_image(np.transpose(array, (1, 2, 0)))
            if caption is not None:
                name = title(method) + (" heatmap" if kind == "heat" else "")
                picture = annotate(picture, f"{caption} | {name}", colormap if kind != "gradient" else None)
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

    ``result`` is an :class:`~camlens.explain.Explanation`; ``index`` picks the image of the batch.
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


def overlays(
    result: Any, images: Any, method: str | None = None, colormap: str = "jet", alpha: float = 0.5
) -> list[np.ndarray]:
    """Each image with ``method``'s map (default: the first CAM of the result) blended over it, at the
    image's own size. ``images`` are the ones that were explained (paths, PIL images or arrays)."""
    from camlens.images import as_rgbs
    from camlens.viz import overlay
    from camlens.viz.annotate import colorize

    rgbs = as_rgbs(images)
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
    sources = images if isinstance(images, list | tuple) else [images]
    rgbs = as_rgbs(images)
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, not {image_format!r}")
    probabilities = None if result.logits is None else result.logits.float().softmax(dim=1).cpu()
    written = []
    for i, (source, rgb) in enumerate(zip(sources, rgbs, strict=True)):
        stem = Path(source).stem if isinstance(source, str | Path) else f"image{i}"
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

    rgbs = as_rgbs(images)
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
