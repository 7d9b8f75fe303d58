"""``camlens detect``: the folder-run task of an object detector (the seam: :mod:`camlens.pipeline.task`).

:class:`Detections` runs :func:`camlens.explain_detections` on each batch of photos, each given to the detector as
it is (``(3, H, W)`` in [0, 1]: the detector does its own resizing). Per image it writes

* ``<stem>-<network>-boxes.<ext>``: the photo with every explained box drawn and labelled (``<index>: <class
  name> <score>``; a reference box that matched nothing in grey);
* ``<stem>-<network>-box<index>-<method>.<ext>``: box ``index``'s map of ``method`` over the photo, its box drawn;
* a ``boxes`` row field, one entry per box (index, label, class name, score, x1, y1, x2, y2, the reference box
  and its IoU with ``--boxes``, the box's files): the run lists them in ``boxes.csv``, one row per (image, box).

The compact maps (``--save-maps``) are keyed ``box<index>/<method>``, kept at most :data:`MAP_SIDE` pixels on the
longer side (the pictures are made from them). The options that change which boxes are explained are part of
the task's ``name``, so a resumed run with others redoes its images.

Reference boxes (``--boxes FILE.json``, :func:`read_boxes`): an object from image file name to its boxes,
each ``[x1, y1, x2, y2]`` in the image's pixels or ``{"box": [x1, y1, x2, y2], "label": class id}``; each is
matched to the detector's box of its class (when labelled) with the largest IoU (at least 0.5), and that box's
score is explained. An image the file does not name is explained with the detector's own boxes (a note says so).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camlens.errors import UsageError
from camlens.pipeline.files import _encode
from camlens.pipeline.items import ImageResult, RunOptions
from camlens.pipeline.targets import TargetsResult, TargetsTask, _notes, _records

if TYPE_CHECKING:
    import torch
    from torch import nn

    from camlens.zoo import Network

#: The compact maps' longer side at most (a box's map over a large photo is kept at this size, then enlarged).
MAP_SIDE = 320
#: A reference box: x1, y1, x2, y2 and its class (None: any class).
Reference = tuple[float, float, float, float, "int | None"]


def read_boxes(path: str) -> dict[str, list[Reference]]:
    """The reference boxes of a ``--boxes`` file, by image file name (see the module's docstring).

    Example:
        >>> import tempfile, os
        >>> with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        ...     _ = f.write('{"a.jpg": [[0, 0, 10, 10]], "b.jpg": [{"box": [5, 5, 20, 20], "label": 3}]}')
        >>> read_boxes(f.name)
        {'a.jpg': [(0.0, 0.0, 10.0, 10.0, None)], 'b.jpg': [(5.0, 5.0, 20.0, 20.0, 3)]}
        >>> os.unlink(f.name)
    """
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"boxes file {path} does not exist")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise UsageError(f"boxes file {path} cannot be read as JSON ({error})") from None
    shape = '{"image.jpg": [[x1, y1, x2, y2] or {"box": [x1, y1, x2, y2], "label": ID}, ...]}'
    if not isinstance(data, dict) or not data:
        raise UsageError(f"boxes file {path} must hold an object {shape}")
    found: dict[str, list[Reference]] = {}
    for name, entries in data.items():
        if not isinstance(entries, list):
            raise UsageError(f"boxes file {path}: {name} must list boxes, as {shape}")
        boxes: list[Reference] = []
        for entry in entries:
            label = None
            if isinstance(entry, dict):
                label = entry.get("label")
                entry = entry.get("box")
                if label is not None and (isinstance(label, bool) or not isinstance(label, int) or label < 0):
                    raise UsageError(f"boxes file {path}: {name}: a label must be a class id (0 or more), not {label}")
            ok = isinstance(entry, list) and len(entry) == 4 and all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in entry
            )  # fmt: skip
            if not ok:
                raise UsageError(f"boxes file {path}: {name}: a box must be [x1, y1, x2, y2] numbers, not {entry!r}")
            x1, y1, x2, y2 = (float(v) for v in entry)
            if x2 < x1 or y2 < y1:
                raise UsageError(f"boxes file {path}: {name}: box {entry} has x2 < x1 or y2 < y1")
            boxes.append((x1, y1, x2, y2, label))
        if len({b[4] is None for b in boxes}) > 1:
            raise UsageError(f"boxes file {path}: {name}: label every box or none")
        found[str(name)] = boxes
    return found


@contextlib.contextmanager
def _configured(model: nn.Module, side: int | None, threshold: float) -> Iterator[None]:
    """For the while, torchvision's detector resizes each image to ``side`` (shorter and longer side at most;
    None: its own sizes) and keeps its boxes scoring at least ``threshold`` where its own threshold is higher
    (``score_thresh``: 0.05 for most, so ``--score-threshold 0`` means every box); everything as found
    afterwards. Nothing changes for other detectors."""
    found: list[tuple[Any, str, Any]] = []
    transform = getattr(model, "transform", None)
    if side is not None and transform is not None and hasattr(transform, "min_size"):
        found += [(transform, "min_size", (side,)), (transform, "max_size", side)]
        if getattr(transform, "fixed_size", None) is not None:
            found.append((transform, "fixed_size", (side, side)))
    for owner in (model, getattr(model, "roi_heads", None)):
        value = getattr(owner, "score_thresh", None)
        if isinstance(value, float) and value > threshold:
            found.append((owner, "score_thresh", threshold))
    kept = [(owner, name, getattr(owner, name)) for owner, name, _ in found]
    try:
        for owner, name, value in found:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in kept:
            setattr(owner, name, value)


class Detections(TargetsTask):
    """``camlens detect``: every box a detector finds in an image (score at least ``score_threshold``, the best
    ``max_detections``), or the ``references`` boxes' matches, explained with each method."""

    targets = "boxes"  # the row field listed one row per (image, box) in boxes.csv

    def __init__(
        self,
        score_threshold: float = 0.5,
        max_detections: int | None = 20,
        references: dict[str, list[Reference]] | None = None,
        labels: tuple[str, ...] = (),
        target: str = "score",
        side: int | None = None,
        masks: int = 1000,
    ) -> None:
        self.score_threshold = float(score_threshold)
        self.max_detections = max_detections
        self.references = references
        self.labels = tuple(labels)
        self.target = target
        self.side = side
        self.masks = masks
        digest = "" if references is None else hashlib.sha1(json.dumps(references, sort_keys=True).encode()).hexdigest()
        self.name = f"detection[{self.score_threshold},{max_detections},{target},{side},{masks},{digest[:12]}]"

    def label(self, class_id: int) -> str:
        if class_id < 0:
            return "no match"
        return self.labels[class_id] if class_id < len(self.labels) and self.labels[class_id] else f"class {class_id}"

    def _explain(self, network: Network, images: list[torch.Tensor], options: RunOptions, boxes: Any) -> Any:
        from camlens.detection import ULTRALYTICS, YOLO_CONFIDENCE, _is_ultralytics, _yolo_forward, explain_detections

        adapter = network.adapter
        if adapter is None and self.score_threshold < YOLO_CONFIDENCE and _is_ultralytics(network.model):
            import dataclasses
            import functools

            adapter = dataclasses.replace(ULTRALYTICS, forward=functools.partial(_yolo_forward, confidence=0.0))
        refs = labels = None
        if boxes is not None:
            refs = [[b[:4] for b in image] for image in boxes]
            labels = [[b[4] for b in image] for image in boxes] if all(b[4] is not None for b in boxes[0]) else None
        configured = _configured(network.model, self.side, self.score_threshold)
        with configured, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = explain_detections(
                network.model, images, list(options.methods), target_layer=options.target_layer,
                score_threshold=self.score_threshold, max_detections=self.max_detections, boxes=refs, labels=labels,
                target=self.target, adapter=adapter, masks=self.masks, batch_size=min(16, self.masks),
            )  # fmt: skip
        return result, _notes(caught)

    def explain_images(
        self,
        network: Network,
        rgbs: list[Any],
        methods: tuple[str, ...],
        target_layer: str | None = None,
        device: Any = "cpu",
    ) -> tuple[Any, list[str]]:
        """The detector's boxes in ``H x W x 3`` uint8 ``rgbs`` explained as this task explains a batch (its
        score threshold, box count, side and target; no reference boxes): the
        :class:`~camlens.detection.DetectionExplanation` and the notes of the call (``image <i>: ...``).
        ``camlens serve`` explains a detector's uploads through it. Bad options raise a ValueError."""
        images = [image_tensor(rgb, device) for rgb in rgbs]
        return self._explain(network, images, RunOptions(methods=tuple(methods), target_layer=target_layer), None)

    def explain_batch(
        self, network: Network, items: list[tuple[Any, str, Any, Any]], options: RunOptions, device: torch.device
    ) -> list[ImageResult]:

        good = [item for item in items if not isinstance(item[2], str)]
        explained: list[TargetsResult] = []
        if not good:
            return _records(items, options, explained)
        images = [image_tensor(item[2], device) for item in good]
        try:
            if self.references is None:
                runs = [(list(range(len(good))), *self._explain(network, images, options, None), "")]
            else:
                runs = []
                for i, item in enumerate(good):
                    refs = self.references.get(Path(str(item[0])).name)
                    note = "" if refs is not None else "the boxes file names no boxes for it: the detector's boxes"
                    runs.append(([i], *self._explain(network, [images[i]], options, None if refs is None else [refs]),
                                 note))  # fmt: skip
        except (ValueError, TypeError, ImportError) as error:
            raise UsageError(" ".join(str(error).split())) from None
        for indices, result, notes, extra in runs:
            for n, i in enumerate(indices):
                path, stem, rgb, _ = good[i]
                explained.append(self._record(path, stem, rgb, result, n, notes, extra, options))
        return _records(items, options, explained)

    def _record(
        self, path: Any, stem: str, rgb: Any, result: Any, n: int, notes: list[str], extra: str, options: RunOptions
    ) -> TargetsResult:
        from camlens.pipeline.maps import CompactMaps, PhotoMaps

        mine = [re.sub(r"^image \d+: ", "", note) for note in notes if not re.match(rf"image (?!{n}:)\d+:", note)]
        mine += [extra] if extra else []
        height, width = rgb.shape[:2]
        scale = min(1.0, MAP_SIDE / max(height, width))
        small = (max(1, round(height * scale)), max(1, round(width * scale)))
        entries, cams = [], {}
        for j, d in enumerate(result.detections[n]):
            matched = d.index is not None
            entries.append({
                "box": j, "label": d.label if matched else None, "class_name": self.label(d.label),
                "score": round(d.score, 6) if matched else None,
                **{c: round(float(v), 2) for c, v in zip(("x1", "y1", "x2", "y2"), d.box, strict=True)},
                "reference": None if d.reference is None else [round(float(v), 2) for v in d.reference],
                "iou": None if d.iou is None else round(float(d.iou), 4), "key": f"box{j}", "file": f"box{j}",
            })  # fmt: skip
            for m in options.methods:
                cams[f"box{j}/{m}"] = _shrink(d.maps[m], small)
        compact = CompactMaps(tuple(cams), (int(height), int(width)), cams)
        return TargetsResult(
            path=str(path), stem=stem, rgb=rgb, maps=PhotoMaps(compact), compact=compact,
            layer=result.target_layer, notes=mine, size=(int(width), int(height)), methods=tuple(options.methods),
            targets=entries,
        )  # fmt: skip

    def box_count(self) -> int:
        """How many boxes an image may get (the files planned before anything runs)."""
        if self.references is not None:
            return max((len(v) for v in self.references.values()), default=0)
        return self.max_detections if self.max_detections is not None else 0

    def planned_files(self, stem: str, network: str, options: RunOptions) -> list[str]:
        if not options.pictures:
            return []
        ext = options.image_format
        names = [f"{stem}-{network}-boxes.{ext}"]
        names += [f"{stem}-{network}-box{j}-{m}.{ext}" for j in range(self.box_count()) for m in options.methods]
        if options.save_maps:
            names.append(f"{stem}-{network}-maps.npz")
        return names

    def files(self, record: ImageResult, network: str, options: RunOptions) -> dict[str, bytes]:
        from camlens.render import title as method_title
        from camlens.viz import overlay
        from camlens.viz.annotate import annotate, colorize
        from camlens.viz.boxes import draw_boxes

        assert isinstance(record, TargetsResult) and record.rgb is not None
        fmt = "PNG" if options.image_format == "png" else "JPEG"
        ext = options.image_format
        boxes = [[t["x1"], t["y1"], t["x2"], t["y2"]] for t in record.targets]
        labels = [-1 if t["label"] is None else t["label"] for t in record.targets]
        captions = [_caption(t) for t in record.targets]
        blobs = {f"{record.stem}-{network}-boxes.{ext}": _encode(draw_boxes(record.rgb, boxes, captions, labels), fmt)}
        for j, t in enumerate(record.targets):
            for m in options.methods:
                heat = colorize(record.maps[f"{t['key']}/{m}"].numpy(), options.colormap)
                picture = overlay(record.rgb, heat)
                picture = draw_boxes(picture, boxes[j : j + 1], captions[j : j + 1], labels[j : j + 1])
                if options.annotate:
                    picture = annotate(picture, f"{captions[j]} | {method_title(m)}", options.colormap)
                blobs[f"{record.stem}-{network}-{t['file']}-{m}.{ext}"] = _encode(picture, fmt)
        if options.save_maps:
            blobs.update(self.maps_file(record, network))
        return blobs


def image_tensor(rgb: Any, device: Any) -> torch.Tensor:
    """An ``H x W x 3`` uint8 RGB array as the ``(3, H, W)`` float tensor in [0, 1] a detector takes."""
    import torch

    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div(255).to(device)


def _caption(target: dict[str, Any]) -> str:
    if target["score"] is None:
        return f"{target['box']}: no match"
    return f"{target['box']}: {target['class_name']} {target['score']:.2f}"


def _shrink(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A box's map in [0, 1] at ``size`` (itself when it is that size already)."""
    import torch.nn.functional as F

    cam = cam.detach().float().cpu()
    if tuple(cam.shape) == size:
        return cam
    return F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)
