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
        if gradient is None:
            gradient = resize_maps(result["guided_backprop"][i : i + 1].float().cpu(), size)[0]
        cam = maps.get("gradcam")
        if cam is None:
            cam = cam_to_image(result.raw["gradcam"][i : i + 1].float().cpu(), size)[0]
        maps["guided_gradcam"] = gradient * cam[None]
    return {m: maps[m] for m in methods}
