"""One image's maps in the compact form a folder run keeps and writes, and back at the photo's size.

A run keeps, per image, what the photo-size maps are made of rather than the maps themselves:

* each CAM method's map at the target layer's resolution, ``normalize_per_image(ReLU(raw))`` (float32,
  in [0, 1]): the photo-size map is ``cam_to_image`` of it (the min-max normalisation commutes with the
  bilinear upsampling, so this is the map :func:`camlens.render.maps_at_size` gives);
* every other map (guided backprop, and any map of another method) at the model's input size;
* Guided Grad-CAM is not stored: it is rebuilt as ``resize(guided backprop) * Grad-CAM`` at the photo's
  size (which is how it is made in the first place);
* ``photo_size``, the ``(height, width)`` of the image as it was explained.

Files (``numpy.savez``, not compressed: the maps are small, and compressing them cost more than the model):
``<stem>-<network>-maps.npz`` (``--save-maps``, float32: keys ``format``, ``stem``, ``class_id``, ``score``
and the per-image keys below without the ``<stem>/`` prefix) and ``maps-<network>-<index>.npz``
(``--no-pictures``, one per batch, image-shaped maps float16: keys ``format``, ``stems`` and per image
``<stem>/photo_size``, ``<stem>/methods``, ``<stem>/cam/<method>``, ``<stem>/input/<method>``).
:func:`load_maps` reads both, and the files of earlier versions (maps stored at the photo's size).

Example:
    >>> maps = load_maps("out/cat-efficientnet_lite0-maps.npz")["cat"]     # doctest: +SKIP
    >>> maps["gradcam"].shape, maps["guided_backprop"].shape               # doctest: +SKIP
    ((480, 640), (480, 640, 3))
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

FORMAT = 2  # the compact form; files without a "format" key hold photo-size maps (format 1)
GUIDED_BACKPROP = "guided_backprop"
GUIDED_GRADCAM = "guided_gradcam"


@dataclass
class CompactMaps:
    """One image's maps as a run keeps them (see the module's docstring); :meth:`at_size` rebuilds them."""

    methods: tuple[str, ...]
    photo_size: tuple[int, int]  # (height, width)
    cams: dict[str, Tensor] = field(default_factory=dict)  # (h, w) at the layer's resolution, in [0, 1]
    inputs: dict[str, Tensor] = field(default_factory=dict)  # (H, W) or (C, H, W) at the model's input size

    @classmethod
    def from_explanation(cls, result: Any, index: int, methods: list[str], size: tuple[int, int]) -> CompactMaps:
        """Image ``index`` of an :class:`~camlens.explanation.Explanation`, for ``methods``, explained at ``size``."""
        import torch

        from camlens.postprocess import normalize_per_image

        i = index
        cams: dict[str, Tensor] = {}
        inputs: dict[str, Tensor] = {}
        needs_cam = [*methods, "gradcam"] if GUIDED_GRADCAM in methods else methods
        for m in needs_cam:
            if m in result.raw and m not in cams:
                cams[m] = normalize_per_image(torch.relu(result.raw[m][i : i + 1].float().cpu()))[0]
        for m in methods:
            if m not in result.raw and m != GUIDED_GRADCAM:
                inputs[m] = result[m][i].float().cpu()
        if GUIDED_GRADCAM in methods and GUIDED_BACKPROP not in inputs:
            source = result.maps.get(GUIDED_BACKPROP)
            if source is None:  # only Guided Grad-CAM was asked for: its guided gradient is in the capture
                source = result.capture.input_gradient
            inputs[GUIDED_BACKPROP] = source[i].float().cpu()
        return cls(tuple(methods), (int(size[0]), int(size[1])), cams, inputs)

    def at_size(
        self, method: str, size: tuple[int, int] | None = None, made: dict[str, Tensor] | None = None
    ) -> Tensor:
        """``method``'s map at ``size`` (default: the photo's): ``(H, W)``, or ``(C, H, W)`` if image-shaped.

        ``made``: maps at this size made already (Guided Grad-CAM reuses Grad-CAM and guided backprop's)."""
        from camlens.postprocess import cam_to_image
        from camlens.viz import resize_maps

        size = tuple(size or self.photo_size)  # type: ignore[assignment]
        made = {} if made is None else made
        if method in made:
            return made[method]
        if method in self.cams:
            value = cam_to_image(self.cams[method][None].float(), size)[0]  # type: ignore[arg-type]
        elif method == GUIDED_GRADCAM:
            value = self.at_size(GUIDED_BACKPROP, size, made) * self.at_size("gradcam", size, made)[None]
        else:
            value = resize_maps(self.inputs[method][None].float(), size)[0]  # type: ignore[arg-type]
        made[method] = value
        return value

    def arrays(self, prefix: str = "", half: bool = False) -> dict[str, np.ndarray]:
        """The npz entries of this image (image-shaped maps float16 with ``half``)."""
        import numpy as np

        out: dict[str, np.ndarray] = {
            f"{prefix}photo_size": np.asarray(self.photo_size, dtype=np.int64),
            f"{prefix}methods": np.asarray(self.methods, dtype=str),
        }
        for m, v in self.cams.items():
            out[f"{prefix}cam/{m}"] = v.numpy().astype(np.float32)
        for m, v in self.inputs.items():
            out[f"{prefix}input/{m}"] = v.numpy().astype(np.float16 if half else np.float32)
        return out

    @classmethod
    def from_arrays(cls, data: Mapping[str, Any], prefix: str = "") -> CompactMaps:
        """The inverse of :meth:`arrays` (``data``: an opened npz file)."""
        import numpy as np
        import torch

        cams: dict[str, Tensor] = {}
        inputs: dict[str, Tensor] = {}
        for key in data:
            if not key.startswith(prefix):
                continue
            kind, _, method = key[len(prefix) :].partition("/")
            if kind == "cam":
                cams[method] = torch.from_numpy(np.asarray(data[key], dtype=np.float32))
            elif kind == "input":
                inputs[method] = torch.from_numpy(np.asarray(data[key], dtype=np.float32))
        size = tuple(int(v) for v in data[f"{prefix}photo_size"])
        return cls(tuple(str(m) for m in data[f"{prefix}methods"]), size, cams, inputs)  # type: ignore[arg-type]


if TYPE_CHECKING:
    _MapsBase = Mapping[str, Tensor]
else:
    _MapsBase = Mapping


class PhotoMaps(_MapsBase):
    """The maps of one image at the photo's size, each made the first time it is read (then kept).

    A folder run that writes no pictures never makes them; ``dict(maps)`` makes all of them.
    """

    def __init__(self, compact: CompactMaps) -> None:
        self.compact = compact
        self._made: dict[str, Tensor] = {}

    def __getitem__(self, method: str) -> Tensor:
        if method not in self.compact.methods:
            raise KeyError(method)
        return self.compact.at_size(method, made=self._made)

    def make_all(self) -> None:
        """Make every map now, in this thread, image-shaped ones ``(C, H, W)`` stored channels-last (the layout
        the pictures are drawn from, so drawing them copies nothing). The folder run calls it in the thread
        that runs the model: resizing is torch work, which a helper thread must not do (it would start an
        OpenMP team of its own beside the model's; :mod:`camlens.pipeline.engines`)."""
        for method in self.compact.methods:
            value = self[method]
            if value.dim() == 3 and not value.permute(1, 2, 0).is_contiguous():
                self._made[method] = value.permute(1, 2, 0).contiguous().permute(2, 0, 1)

    def __iter__(self) -> Iterator[str]:
        return iter(self.compact.methods)

    def __len__(self) -> int:
        return len(self.compact.methods)

    def __reduce__(self) -> Any:  # pickled (to and from Ray workers) without the photo-size maps
        return (PhotoMaps, (self.compact,))

    def __repr__(self) -> str:
        return f"PhotoMaps({', '.join(self.compact.methods)} at {self.compact.photo_size})"


def image_file_arrays(compact: CompactMaps, stem: str, class_id: int | None, score: float) -> dict[str, Any]:
    """The entries of ``<stem>-<network>-maps.npz`` (``--save-maps``): float32 maps, class and score."""
    import numpy as np

    arrays: dict[str, Any] = {"format": np.int64(FORMAT), "stem": np.asarray(stem)}
    arrays.update(compact.arrays())
    arrays["class_id"] = np.int64(-1 if class_id is None else class_id)
    arrays["score"] = np.float32(score)
    return arrays


def batch_file_arrays(items: list[tuple[str, CompactMaps]]) -> dict[str, Any]:
    """The entries of ``maps-<network>-<index>.npz`` (``--no-pictures``): every image's maps, keyed by stem."""
    import numpy as np

    arrays: dict[str, Any] = {"format": np.int64(FORMAT), "stems": np.asarray([s for s, _ in items], dtype=str)}
    for stem, compact in items:
        arrays.update(compact.arrays(f"{stem}/", half=True))
    return arrays


def npz_bytes(arrays: dict[str, Any]) -> bytes:
    """``arrays`` as the bytes of an (uncompressed) npz file."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def load_compact(path: str | os.PathLike) -> dict[str, CompactMaps]:
    """The compact maps of a maps file, by stem (a file of an earlier version, which has none: ``ValueError``)."""
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        if "format" not in data.files:
            raise ValueError(f"{path} holds photo-size maps (an earlier version's file): read it with load_maps")
        return _compacts(data)


def _compacts(data: Any) -> dict[str, CompactMaps]:
    if "stems" in data.files:
        return {str(s): CompactMaps.from_arrays(data, f"{s}/") for s in data["stems"]}
    return {str(data["stem"]): CompactMaps.from_arrays(data)}


def load_maps(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """The maps of a file a folder run wrote, at the photo's size: ``{stem: {method: array}}``.

    CAMs are ``(H, W)`` float32 in [0, 1]; image-shaped maps (guided backprop, Guided Grad-CAM) are
    ``(H, W, C)`` float32. Reads ``<stem>-<network>-maps.npz`` (``--save-maps``: one stem) and
    ``maps-<network>-<index>.npz`` (``--no-pictures``: the batch's stems), of this version and of earlier
    ones (which stored photo-size maps; a ``--save-maps`` file of those names no stem: its key is the
    file's name less ``-maps.npz``).

    Raises:
        ValueError: the file is no maps file of camlens.
    """
    import numpy as np

    name = os.path.basename(os.fspath(path))
    with np.load(path, allow_pickle=False) as data:
        if "format" not in data.files:
            return _load_format1(data, name)
        compacts = _compacts(data)
    out: dict[str, dict[str, np.ndarray]] = {}
    for stem, compact in compacts.items():
        maps = {}
        for m in compact.methods:
            value = compact.at_size(m).numpy().astype(np.float32)
            maps[m] = value if value.ndim == 2 else np.ascontiguousarray(np.transpose(value, (1, 2, 0)))
        out[stem] = maps
    return out


def _load_format1(data: Any, name: str) -> dict[str, dict[str, np.ndarray]]:
    """Files of earlier versions: photo-size maps, ``stem/method`` keys (batch, ``(C, H, W)`` for image-shaped
    maps) or ``method`` keys beside ``class_id`` and ``score`` (per image, ``(H, W, C)``)."""
    import numpy as np

    out: dict[str, dict[str, np.ndarray]] = {}
    keys = list(data.files)
    if keys and all("/" in k for k in keys):
        for key in keys:
            stem, _, method = key.rpartition("/")
            value = np.asarray(data[key], dtype=np.float32)
            out.setdefault(stem, {})[method] = value if value.ndim == 2 else np.transpose(value, (1, 2, 0))
        return out
    if "class_id" not in keys:
        raise ValueError(f"{name} is not a maps file of camlens")
    stem = name[: -len("-maps.npz")] if name.endswith("-maps.npz") else name
    out[stem] = {k: np.asarray(data[k], dtype=np.float32) for k in keys if k not in ("class_id", "score")}
    return out
