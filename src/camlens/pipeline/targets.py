"""Folder-run tasks whose items have several targets, one map per target and method (the seam:
:mod:`camlens.pipeline.task`):

* :class:`Segmentation` (``camlens segment``): :func:`camlens.explain_segmentation` on each batch; per image
  the predicted mask as a picture with a legend (``<stem>-<network>-mask.<ext>``), one picture per class
  and method (``<stem>-<network>-class<id>-<name>-<method>.<ext>``), and a ``classes`` row field (id, name,
  pixel share, score) for each class explained: the classes predicted in the image, or those asked for;
* :class:`TextPrompts` (``camlens explain --text``): :func:`camlens.explain_text` on each batch; one picture per
  prompt and method (``<stem>-<network>-prompt<index>-<text>-<method>.<ext>``) and a ``prompts`` row field
  (the prompt and its cosine similarity with the image).

The run writes, beside ``results.jsonl`` (one row per image), a table with one row per (image, target):
``classes.csv`` / ``prompts.csv`` (:func:`camlens.pipeline.table.export_targets`, the task's ``targets``).
The compact maps (``--save-maps`` / ``--no-pictures``) are keyed ``class<id>/<method>`` and
``prompt<index>/<method>``. The targets are part of the task's ``name``, so a resumed run with other classes
or prompts redoes its images.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from camlens.errors import UsageError
from camlens.pipeline.files import _encode, batch_maps_file
from camlens.pipeline.items import ImageResult, RunOptions
from camlens.pipeline.sources import model_inputs, source_key

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import Tensor

    from camlens.zoo import Network


@dataclass
class TargetsResult(ImageResult):
    """One image's record in a task with several targets: ``targets`` are its row entries (one per target,
    each with its ``key`` into the maps), ``mask`` the predicted class ids (segmentation) at the output's grid."""

    targets: list[dict[str, Any]] = field(default_factory=list)
    mask: np.ndarray | None = None

    def slim(self) -> None:
        super().slim()
        self.mask = None


def slug(text: str, limit: int = 32) -> str:
    """``text`` as a file-name part: runs of anything but letters, digits, ``.`` and ``_`` become ``_``.

    Example:
        >>> slug("a photo of a dog!")
        'a_photo_of_a_dog'
    """
    return re.sub(r"[^A-Za-z0-9._]+", "_", text).strip("_.")[:limit] or "x"


def _batch(network: Network, good: list[tuple[Any, str, Any, Any]], device: torch.device) -> torch.Tensor:
    """The model's input batch of decoded items (made by the readers already, or here)."""
    import torch

    from camlens.images import to_batch

    tensors = model_inputs(network, good)
    if tensors is not None:
        return torch.cat(tensors).to(device)
    return to_batch([item[2] for item in good], network.input_size, network.mean, network.std).to(device)


def _records(
    items: list[tuple[Any, str, Any, Any]],
    options: RunOptions,
    explained: list[TargetsResult],
) -> list[ImageResult]:
    """The batch's records in input order: a bad item's error record, else its explained one."""
    from pathlib import Path

    made = iter(explained)
    out: list[ImageResult] = []
    for path, stem, rgb, _ in items:
        record = TargetsResult(str(path), stem, error=rgb, methods=tuple(options.methods)) if isinstance(rgb, str) \
            else next(made)  # fmt: skip
        if record.stem != Path(record.path).stem:
            why = "another input has the same file name" if Path(record.path).stem in record.stem else "name too long"
            record.notes.append(f"written as {record.stem} ({why})")
        out.append(record)
    return out


def _compact(
    raw: dict[str, Tensor], index: int, keys: list[tuple[str, int]], methods: tuple[str, ...], size: Any
) -> Any:
    """Image ``index``'s compact maps: ``<key>/<method>`` -> its target's layer map, ReLU'd and normalised."""
    import torch

    from camlens.pipeline.maps import CompactMaps
    from camlens.postprocess import normalize_per_image

    cams = {
        f"{key}/{m}": normalize_per_image(torch.relu(raw[m][index, k][None].float().cpu()))[0]
        for key, k in keys
        for m in methods
    }
    return CompactMaps(tuple(cams), (int(size[0]), int(size[1])), cams)


def _target_pictures(record: TargetsResult, network: str, options: RunOptions, title: str) -> dict[str, bytes]:
    """One overlay per target and method (``--annotate``: captioned ``<target> | <method>`` with a colour bar)."""
    from camlens.render import title as method_title
    from camlens.viz import overlay
    from camlens.viz.annotate import annotate, colorize

    assert record.rgb is not None
    fmt = "PNG" if options.image_format == "png" else "JPEG"
    blobs: dict[str, bytes] = {}
    for target in record.targets:
        for m in options.methods:
            heat = colorize(record.maps[f"{target['key']}/{m}"].numpy(), options.colormap)
            picture = overlay(record.rgb, heat)
            if options.annotate:
                picture = annotate(picture, f"{target[title]} | {method_title(m)}", options.colormap)
            blobs[f"{record.stem}-{network}-{target['file']}-{m}.{options.image_format}"] = _encode(picture, fmt)
    return blobs


def _row(record: ImageResult, network: str, key: str, name: str) -> dict[str, Any]:
    """The shared columns, the layer, size, methods and notes, and the targets under ``name``."""
    row = record.record(network, key)
    for column in ("class_id", "class_name", "score", "probability", "topk", "metrics"):
        row.pop(column, None)
    targets = getattr(record, "targets", [])
    row[name] = [
        {**{k: v for k, v in t.items() if k not in ("key", "file")},
         "files": [f for f in record.files if f"-{t['file']}-" in f]}
        for t in targets
    ]  # fmt: skip
    row["source"] = source_key(record.path)
    return row


def _notes(caught: list[warnings.WarningMessage]) -> list[str]:
    return [" ".join(str(w.message).split()) for w in caught]


class TargetsTask:
    """What the several-targets tasks share: the maps file of one image (``--save-maps``), the batch's maps file
    (``--no-pictures``) and the results row; each task names its row field in ``targets``."""

    targets = ""

    def maps_file(self, record: ImageResult, network: str) -> dict[str, bytes]:
        """``<stem>-<network>-maps.npz`` of ``record``'s compact maps."""
        from camlens.pipeline.maps import image_file_arrays, npz_bytes

        assert record.compact is not None
        arrays = image_file_arrays(record.compact, record.stem, None, float("nan"))
        return {f"{record.stem}-{network}-maps.npz": npz_bytes(arrays)}

    def batch_files(self, records: list[ImageResult], network: str, index: int) -> dict[str, bytes]:
        return dict([batch_maps_file(records, network, index)])

    def row(self, record: ImageResult, network: str, key: str) -> dict[str, Any]:
        return _row(record, network, key, self.targets)


class Segmentation(TargetsTask):
    """``camlens segment``: every class predicted in an image (or the ``classes`` asked for) explained with
    Seg-Grad-CAM's score (the class's logit summed over its predicted pixels)."""

    targets = "classes"  # the row field listed one row per (image, class) in classes.csv

    def __init__(self, classes: tuple[int, ...] | None = None, labels: tuple[str, ...] = (), count: int = 0) -> None:
        self.classes = None if classes is None else tuple(int(c) for c in classes)
        self.labels = tuple(labels)
        self.count = count  # the model's classes (for the names planned before anything runs); 0: unknown
        asked = "" if self.classes is None else "[" + ",".join(map(str, self.classes)) + "]"
        self.name = f"segmentation{asked}"

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else f"class {class_id}"

    def class_file(self, class_id: int) -> str:
        return f"class{class_id}-{slug(self.label(class_id))}"

    def explain_batch(
        self, network: Network, items: list[tuple[Any, str, Any, Any]], options: RunOptions, device: torch.device
    ) -> list[ImageResult]:
        import torch

        from camlens.segmentation import explain_segmentation

        good = [item for item in items if not isinstance(item[2], str)]
        explained: list[TargetsResult] = []
        if good:
            x = _batch(network, good, device)
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    result = explain_segmentation(
                        network.model, x, list(options.methods), classes=self.classes, target_layer=options.target_layer
                    )
            except (ValueError, TypeError) as error:
                raise UsageError(str(error)) from None
            notes = [n for n in _notes(caught) if not n.startswith("the region is empty")]
            predicted = result.predicted.cpu()
            pixels = predicted[0].numel()
            for i, (path, stem, rgb, _) in enumerate(good):
                counts = torch.bincount(predicted[i].flatten(), minlength=max(result.classes) + 1)
                entries, keys, mine = [], [], list(notes)
                for k, c in enumerate(result.classes):
                    share = float(counts[c]) / pixels
                    if self.classes is None and counts[c] == 0:
                        continue  # a class predicted elsewhere in the batch only
                    if counts[c] == 0:
                        mine.append(
                            f"{self.label(c)} (class {c}) is predicted nowhere in this image: its maps are zero"
                        )
                    key = f"class{c}"
                    keys.append((key, k))
                    entries.append({"class_id": c, "class_name": self.label(c), "pixel_share": round(share, 6),
                                    "score": round(float(result.scores[i, k]), 6), "key": key,
                                    "file": self.class_file(c)})  # fmt: skip
                compact = _compact(result.raw, i, keys, tuple(options.methods), rgb.shape[:2])
                from camlens.pipeline.maps import PhotoMaps

                explained.append(
                    TargetsResult(
                        path=str(path), stem=stem, rgb=rgb, maps=PhotoMaps(compact), compact=compact,
                        layer=result.target_layer, notes=mine, size=(int(rgb.shape[1]), int(rgb.shape[0])),
                        methods=tuple(options.methods), targets=entries, mask=predicted[i].numpy(),
                    )
                )  # fmt: skip
        return _records(items, options, explained)

    def planned_files(self, stem: str, network: str, options: RunOptions) -> list[str]:
        if not options.pictures:
            return []
        classes = self.classes if self.classes is not None else range(self.count or len(self.labels))
        names = [f"{stem}-{network}-mask.{options.image_format}"]
        names += [f"{stem}-{network}-{self.class_file(c)}-{m}.{options.image_format}" for c in classes
                  for m in options.methods]  # fmt: skip
        if options.save_maps:
            names.append(f"{stem}-{network}-maps.npz")
        return names

    def files(self, record: ImageResult, network: str, options: RunOptions) -> dict[str, bytes]:
        import numpy as np
        from PIL import Image

        from camlens.viz.legend import mask_picture

        assert isinstance(record, TargetsResult) and record.rgb is not None and record.mask is not None
        height, width = record.rgb.shape[:2]
        nearest = Image.Resampling.NEAREST
        mask = np.asarray(Image.fromarray(record.mask.astype(np.int32)).resize((width, height), nearest))
        count = max(len(self.labels), int(record.mask.max()) + 1)
        names = [self.label(c) for c in range(count)]
        shares = np.bincount(record.mask.ravel(), minlength=count) / record.mask.size
        fmt = "PNG" if options.image_format == "png" else "JPEG"
        blobs = {
            f"{record.stem}-{network}-mask.{options.image_format}": _encode(
                mask_picture(record.rgb, mask, names, list(shares)), fmt
            )
        }
        blobs.update(_target_pictures(record, network, options, "class_name"))
        if options.save_maps:
            blobs.update(self.maps_file(record, network))
        return blobs


class TextPrompts(TargetsTask):
    """``camlens explain --text``: each image's cosine similarity with each prompt, explained."""

    targets = "prompts"  # the row field listed one row per (image, prompt) in prompts.csv

    def __init__(self, prompts: tuple[str, ...]) -> None:
        if not prompts:
            raise UsageError("--text needs at least one prompt")
        self.prompts = tuple(prompts)
        self.name = "text" + repr(self.prompts)

    def prompt_file(self, index: int) -> str:
        return f"prompt{index}-{slug(self.prompts[index])}"

    def explain_batch(
        self, network: Network, items: list[tuple[Any, str, Any, Any]], options: RunOptions, device: torch.device
    ) -> list[ImageResult]:
        from camlens.text import explain_text

        good = [item for item in items if not isinstance(item[2], str)]
        explained: list[TargetsResult] = []
        if good:
            x = _batch(network, good, device)
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    result = explain_text(network.model, x, list(self.prompts), list(options.methods),
                                          tokenizer=network.tokenizer, target_layer=options.target_layer,
                                          layout=options.layout)  # fmt: skip
            except (ValueError, TypeError, ImportError) as error:
                raise UsageError(str(error)) from None
            notes = _notes(caught)
            keys = [(f"prompt{t}", t) for t in range(len(self.prompts))]
            from camlens.pipeline.maps import PhotoMaps

            for i, (path, stem, rgb, _) in enumerate(good):
                entries = [{"prompt": p, "similarity": round(float(result.similarity[i, t]), 6), "key": f"prompt{t}",
                            "file": self.prompt_file(t)} for t, p in enumerate(self.prompts)]  # fmt: skip
                compact = _compact(result.raw, i, keys, tuple(options.methods), rgb.shape[:2])
                explained.append(
                    TargetsResult(
                        path=str(path), stem=stem, rgb=rgb, maps=PhotoMaps(compact), compact=compact,
                        layer=result.target_layer, notes=list(notes), size=(int(rgb.shape[1]), int(rgb.shape[0])),
                        methods=tuple(options.methods), targets=entries,
                    )
                )  # fmt: skip
        return _records(items, options, explained)

    def planned_files(self, stem: str, network: str, options: RunOptions) -> list[str]:
        if not options.pictures:
            return []
        names = [f"{stem}-{network}-{self.prompt_file(t)}-{m}.{options.image_format}" for t in range(len(self.prompts))
                 for m in options.methods]  # fmt: skip
        if options.save_maps:
            names.append(f"{stem}-{network}-maps.npz")
        return names

    def files(self, record: ImageResult, network: str, options: RunOptions) -> dict[str, bytes]:
        assert isinstance(record, TargetsResult)
        blobs = _target_pictures(record, network, options, "prompt")
        if options.save_maps:
            blobs.update(self.maps_file(record, network))
        return blobs
