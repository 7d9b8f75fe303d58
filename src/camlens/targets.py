"""Turn a ``targets`` argument into one score per image.

``targets`` may be

* ``None``: each image's predicted class (argmax of the logits);
* an ``int``: that class for every image;
* a sequence or 1-D tensor of ``B`` ints: one class per image;
* several labels per image (multi-label, :func:`multi_labels`): a sequence of ``B`` sequences of ints, a
  ``(B, L)`` integer tensor (``L`` labels each) or a ``(B, N)`` bool tensor (multi-hot); ``explain`` gives
  one row per image and label;
* a callable ``output -> (B,)`` scores, which receives the model's raw output (a tensor, tuple, dict or
  object), so that segmentation, detection, captioning or VQA heads can be explained.

Scores are pre-softmax: the class logit, or whatever scalar per image the callable returns. A model whose
output is a sigmoid / softmax / log-softmax of its logits is scored on those logits (:mod:`camlens.heads`);
a ``(B,)`` or ``(B, 1)`` output with ``targets=None`` is scored as it is (a regression).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from camlens.heads import REGRESSION, Head, HeadRecorder

Targets = None | int | Sequence[int] | Sequence[Sequence[int]] | Tensor | Callable[[Any], Tensor]

_HOW_TO_PICK = "pass targets=a callable mapping the model output to one score per image (a tensor of shape (B,))"


def _index(key: Any) -> str:
    return f'"{key}"' if isinstance(key, str) and '"' not in key else repr(key)


def _score_example(items: list[tuple[str, Any]], batch: int) -> str | None:
    """A score for the first ``(B, N)`` tensor among ``items`` (``(expression, value)``), else for the first
    ``(B, C, ...)`` map summed over its positions (class 281, or 0 for fewer classes); None if none fits."""
    batched = [(e, v) for e, v in items if isinstance(v, Tensor) and v.dim() >= 2 and v.shape[0] == batch]
    for expression, value in batched:
        if value.dim() == 2:
            return f"{expression}[:, {281 if value.shape[1] > 281 else 0}]"
    for expression, value in batched:
        return f"{expression}[:, {281 if value.shape[1] > 281 else 0}].flatten(1).sum(1)"
    return None


SEGMENTATION_HINT = (
    "camlens.explain_segmentation(model, x) explains each class's region (Seg-Grad-CAM) at a layer before the "
    "segmentation head's classifier"
)


def is_dense(output: Any, batch: int) -> bool:
    """Whether the output holds a segmentation model's ``(B, C, h, w)`` class map (a tensor, ``.logits``,
    ``["logits"]`` or torchvision's ``["out"]``) with at least 2 x 2 positions."""
    found = logits_of(output)
    if found is None and isinstance(output, Mapping):
        found = output.get("out")
    return isinstance(found, Tensor) and found.dim() == 4 and found.shape[0] == batch and found.shape[-2:].numel() >= 4


def _how_to_pick(output: Any, batch: int) -> str:
    """What to pass as ``targets`` for this output: an example that fits its actual structure."""
    if is_dense(output, batch):
        return f"this looks like a segmentation model's (B, C, H, W) class map: {SEGMENTATION_HINT}; or " + (
            _how_to_pick_scores(output, batch)
        )
    return _how_to_pick_scores(output, batch)


def _how_to_pick_scores(output: Any, batch: int) -> str:
    if isinstance(output, Mapping):
        example = _score_example([(f"out[{_index(k)}]", v) for k, v in output.items()], batch)
    elif isinstance(output, tuple | list):
        if output and isinstance(output[0], Mapping):  # a detector: one dict per image
            keys = sorted(map(str, output[0]))[:6]
            field = "scores" if "scores" in output[0] else (keys[0] if keys else "scores")
            return (
                f"{_HOW_TO_PICK}; this looks like a detector's output (one dict per image, keys {keys}): explain one "
                f"detection per image, e.g. targets=lambda out: torch.stack([d[{_index(field)}][0] for d in out]) "
                "(the top detection; every image needs one)"
            )
        example = _score_example([(f"out[{i}]", v) for i, v in enumerate(output)], batch)
    else:
        example = _score_example([("out", output)], batch)
    if example is None:
        return _HOW_TO_PICK
    return f"{_HOW_TO_PICK}, e.g. targets=lambda out: {example}"


@dataclass(frozen=True)
class TargetScores:
    """The scores to explain, and where they came from."""

    scores: Tensor  # (B,) pre-softmax, part of the autograd graph
    logits: Tensor | None  # (B, N) when the output holds classification logits
    classes: Tensor | None  # (B,) long, None for a callable target
    head: str | None = None  # what the scores are when not the output's class logits (see target_scores)


def logits_of(output: Any) -> Tensor | None:
    """The classification logits inside a model output, or None if there is no unambiguous tensor.

    Accepts a tensor, an object with a ``.logits`` tensor (torchvision ``InceptionOutputs``, Hugging
    Face outputs) or a mapping with a ``"logits"`` entry.
    """
    if isinstance(output, Tensor):
        return output
    candidate = getattr(output, "logits", None)
    if candidate is None and isinstance(output, Mapping):
        candidate = output.get("logits")
    return candidate if isinstance(candidate, Tensor) else None


def forward_logits(forward: Callable[[], Any]) -> Any:
    """Run ``forward()`` (one forward of a model) and return its output, or, when that output (or its
    ``.logits``) is a final sigmoid / softmax / log-softmax (:mod:`camlens.heads`), the logits before it:
    what the engine explains, for the methods that run the model again."""
    recorder = HeadRecorder()
    recorder.start()
    try:
        output = forward()
    finally:
        recorder.stop()
    logits = logits_of(output)
    head = None if logits is None or logits.dim() == 0 else recorder.found(logits, int(logits.shape[0]))
    return output if head is None else head.logits


def _describe(output: Any) -> str:
    if isinstance(output, Mapping):
        return f"a {type(output).__name__} with keys {sorted(map(str, output))[:6]}"
    if isinstance(output, tuple | list):
        return f"a {type(output).__name__} of {len(output)} items"
    return f"a {type(output).__name__}"


def _check_class_range(classes: list[int], num_classes: int) -> None:
    for value in classes:
        if not 0 <= value < num_classes:
            raise ValueError(
                f"class {value} is out of range: the model has {num_classes} outputs "
                f"(valid classes are 0..{num_classes - 1})"
            )


def _is_class_index(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _classes_from(targets: Any, batch: int, num_classes: int, device: torch.device) -> Tensor:
    if isinstance(targets, bool):
        raise TypeError("targets must be None, an int, B ints, a 1-D tensor or a callable, not a bool")
    if isinstance(targets, Tensor) and (
        targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool
    ):
        raise TypeError(
            f"a targets tensor must hold integer class indices, not {targets.dtype} (shape {tuple(targets.shape)}): "
            "pass a long tensor or an int, or a callable for any other score"
        )
    if isinstance(targets, float):
        raise TypeError(
            f"targets must be a class index (an int), not the float {targets!r}: pass int(...) if you mean a class, "
            "or a callable for any other score"
        )
    if _is_class_index(targets) or (isinstance(targets, Tensor) and targets.dim() == 0):
        value = int(targets)
        _check_class_range([value], num_classes)
        return torch.full((batch,), value, dtype=torch.long, device=device)
    if isinstance(targets, Tensor):
        if targets.dim() != 1:
            raise TypeError(f"a targets tensor must be 1-D integer, got {targets.dtype} {tuple(targets.shape)}")
        values = targets.tolist()
    elif isinstance(targets, Sequence) and not isinstance(targets, str | bytes):
        values = list(targets)
        if not all(_is_class_index(v) for v in values):
            raise TypeError("a targets sequence must hold ints (one class per image)")
        values = [int(v) for v in values]
    else:
        raise TypeError(
            f"targets must be None, an int, B ints, a 1-D tensor or a callable, not {type(targets).__name__}"
        )
    if len(values) != batch:
        raise ValueError(f"targets has {len(values)} classes for a batch of {batch} images")
    _check_class_range(values, num_classes)
    return torch.as_tensor(values, dtype=torch.long, device=device)


def multi_labels(targets: Any, batch: int) -> tuple[Tensor, Tensor] | None:
    """``(image_index, classes)``, one entry per image and label, when ``targets`` names several labels per
    image; None for any other targets value.

    Multi-label targets are a sequence of ``batch`` sequences (or 1-D tensors) of ints, one per image (their
    lengths may differ, an empty one explains nothing for that image), a ``(batch, L)`` integer tensor, or a
    ``(batch, N)`` bool tensor whose true entries are each image's labels (the multi-hot labels of a
    multi-label data set). The rows are in image order, each image's labels in the order given.

    Raises:
        ValueError: not ``batch`` rows, or no label at all.
        TypeError: a row holding anything but ints.
    """
    if isinstance(targets, Tensor):
        if targets.dim() != 2:
            return None
        if targets.dtype == torch.bool:
            if targets.shape[0] != batch:
                raise ValueError(f"a multi-hot targets tensor has {targets.shape[0]} rows for {batch} images")
            found = targets.nonzero()
            rows = [found[:, 0], found[:, 1]]
        else:
            if targets.dtype.is_floating_point or targets.dtype.is_complex:
                raise TypeError(
                    f"multi-label targets must be integer class indices or a bool multi-hot tensor, not {targets.dtype}"
                )
            if targets.shape[0] != batch:
                raise ValueError(f"targets has {targets.shape[0]} rows of labels for a batch of {batch} images")
            labels = targets.shape[1]
            rows = [torch.arange(batch).repeat_interleave(labels), targets.reshape(-1).long().cpu()]
    elif (
        isinstance(targets, Sequence)
        and not isinstance(targets, str | bytes)
        and len(targets) > 0
        and all(isinstance(t, Tensor | Sequence) and not isinstance(t, str | bytes) for t in targets)
    ):
        if len(targets) != batch:
            raise ValueError(f"targets has {len(targets)} lists of labels for a batch of {batch} images")
        lists = [t.tolist() if isinstance(t, Tensor) else list(t) for t in targets]
        if not all(_is_class_index(v) for labels in lists for v in labels):
            raise TypeError("multi-label targets must hold ints: one list of class indices per image")
        rows = [
            torch.tensor([i for i, labels in enumerate(lists) for _ in labels], dtype=torch.long),
            torch.tensor([int(v) for labels in lists for v in labels], dtype=torch.long),
        ]
    else:
        return None
    if rows[0].numel() == 0:
        raise ValueError("the multi-label targets name no label for any image")
    return rows[0].long().cpu(), rows[1].long().cpu()


def target_scores(output: Any, targets: Targets, batch: int, head: Head | None = None) -> TargetScores:
    """Compute the ``(B,)`` scores to explain from a model output.

    ``head`` is the squashing the output came from (:class:`camlens.heads.Head`, found by the engine): class
    targets then score its input, the logits, and ``TargetScores.head`` names it (``"sigmoid"``,
    ``"softmax"``, ``"log_softmax"``). A ``(B,)`` or ``(B, 1)`` output with ``targets=None`` is a regression
    (or one-logit) output: the score is the output itself and ``head`` is ``"regression"`` (or the squashing
    before it). A callable target always receives the raw output (``head`` None).

    Raises:
        ValueError: a class out of range, a wrong number of targets, or an output with no logits.
        TypeError: a targets value of an unsupported type.
    """
    logits = logits_of(output)
    if callable(targets) and not isinstance(targets, Tensor):
        scores = targets(output)
        if not isinstance(scores, Tensor):
            raise TypeError(f"the targets callable must return a tensor of {batch} scores, got {type(scores).__name__}")
        if scores.dim() == 2 and scores.shape[1] == 1:
            scores = scores[:, 0]
        if scores.shape != (batch,):
            raise ValueError(
                f"the targets callable must return one score per image, shape ({batch},), got {tuple(scores.shape)}"
            )
        return TargetScores(scores=scores, logits=logits if _is_2d(logits, batch) else None, classes=None)

    if logits is None:
        raise ValueError(f"the model returned {_describe(output)}, not logits: {_how_to_pick(output, batch)}")
    kind = None
    if head is not None:
        logits, kind = head.logits, head.kind
    if targets is None and logits.shape in ((batch,), (batch, 1)):  # a regression or one-logit output
        scores = logits if logits.dim() == 1 else logits[:, 0]
        classes = None if logits.dim() == 1 else torch.zeros(batch, dtype=torch.long, device=logits.device)
        return TargetScores(
            scores=scores, logits=logits if logits.dim() == 2 else None, classes=classes, head=kind or REGRESSION
        )
    if not _is_2d(logits, batch):
        raise ValueError(
            f"the model's output has shape {tuple(logits.shape)}, not (batch, classes): {_how_to_pick(logits, batch)}"
        )
    if targets is None:
        classes = logits.detach().argmax(dim=1)
    else:
        classes = _classes_from(targets, batch, logits.shape[1], logits.device)
    scores = logits.gather(1, classes[:, None])[:, 0]
    return TargetScores(scores=scores, logits=logits, classes=classes, head=kind)


def _is_2d(logits: Tensor | None, batch: int) -> bool:
    return logits is not None and logits.dim() == 2 and logits.shape[0] == batch


def class_score(class_index: int) -> Callable[[Any], Tensor]:
    """A target callable for class ``class_index`` of a ``(B, N)`` output (or one holding ``.logits``)."""

    def score(output: Any) -> Tensor:
        logits = logits_of(output)
        if logits is None:
            raise ValueError(f"the model returned {_describe(output)}, not logits")
        return logits[:, class_index]

    return score
