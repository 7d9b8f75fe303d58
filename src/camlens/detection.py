"""Explain an object detector box by box: ``explain_detections``.

One forward pass gives every box of every image; the boxes' backward passes are batched
(``torch.autograd.grad(..., is_grads_batched=True)``: one vectorised backward per image for all its boxes,
falling back to one ``retain_graph`` backward per box where an op of the head has no batching rule). As in
:func:`camlens.capture`, everything before the target layer runs without autograd: the layer's forward hook
hands the rest of the network fresh leaves, so only the part after the layer is recorded.

**Detectors.** torchvision's detectors (Faster R-CNN v1/v2/MobileNet, Mask R-CNN, Keypoint R-CNN, RetinaNet,
FCOS, SSD, SSDlite) are recognised; any other detector goes through a :class:`DetectorAdapter`: a function
``forward(model, images) -> [dict per image]`` whose dicts hold ``boxes`` ``(n, 4)`` (x1, y1, x2, y2 in the
image's pixels), ``labels`` ``(n,)``, ``scores`` ``(n,)`` and optionally ``class_scores`` ``(n, C)``,
``objectness`` ``(n,)`` and ``frame`` (see :class:`DetectorAdapter`). ``scores[k]`` (or a box coordinate, or
the objectness) must be differentiable: it is the score of box ``k`` that is explained.

**The layer.** With ``target_layer=None`` the layer is the detector's ``backbone`` (torchvision): the module
whose output is every feature level the heads read (the FPN's levels, SSD's extra maps). A layer whose output
is a dict, list or tuple of maps is explained at **all its levels fused**: each level's signed map is computed
from that level's activations and gradients, upsampled bilinearly to the network's input grid, and the levels
are **summed**; then the ReLU and the per-box min-max normalisation. For ``hirescam``/``odam`` the sum over
levels and positions is exactly the first-order term ``sum_l sum_kp g A``. The layer is the same for every
image (never one level picked by the box's size).

**The maps.** ``maps[m]`` is ``(H, W)`` in [0, 1] at the image's own size; ``raw[m]`` is the signed fused map
before the ReLU, also ``(H, W)`` (for ``guided_backprop`` the ``(3, H, W)`` input gradient, and the map is its
largest absolute value over the channels, normalised). Torchvision detectors resize (and pad) the images; the
maps are taken back through the same resize (``frame``).

**Methods.** Every ``(A, g)`` weighting of :mod:`camlens.methods` (``gradcam``, ``gradcam++``, ``xgradcam``,
``layercam``, ``hirescam``, ``eigencam`` ...) with ``g`` the gradient of the box's target; the activation
methods (``eigencam``, ``fem``, ``kpcacam``) need no gradient and give one map per image, shared by its boxes;
``odam`` (Zhao et al., ICLR 2023): ``relu(sum_k g_k * A_k)`` per position, the element-wise weighting (it is
``hirescam``'s formula, reused); ``drise`` (Petsiuk et al., CVPR 2021, see :func:`drise_weights`);
``guided_backprop`` and ``guided_gradcam`` (camlens's guided rule, :mod:`camlens.guided`).
"""

from __future__ import annotations

import contextlib
import math
import warnings as _warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camlens.errors import ExplanationNote, check_names
from camlens.guard import guard
from camlens.guided import GuidedMode, GuidedSwitch
from camlens.layers import resolve_layer
from camlens.methods import CAM_METHODS
from camlens.names import GUIDED_BACKPROP, GUIDED_GRADCAM, METHOD_INFO
from camlens.postprocess import normalize_per_image, resize

ODAM = "odam"
DRISE = "drise"
TARGETS = ("score", "x1", "y1", "x2", "y2", "objectness")
BACKWARDS = ("auto", "batched", "loop")
_COORDINATES = {"x1": 0, "y1": 1, "x2": 2, "y2": 3}

Box = tuple[float, float, float, float]


def detection_methods() -> list[str]:
    """Every method name :func:`explain_detections` accepts."""
    return [*CAM_METHODS, ODAM, DRISE, GUIDED_BACKPROP, GUIDED_GRADCAM]


@dataclass(frozen=True)
class DetectorAdapter:
    """How camlens runs a detector: ``forward(model, images) -> [dict per image]``.

    ``images`` is a list of ``(3, H, W)`` tensors. Each dict holds

    * ``boxes`` ``(n, 4)``: x1, y1, x2, y2 in the image's pixels;
    * ``labels`` ``(n,)`` integers; ``scores`` ``(n,)``: the score of box ``k`` as a differentiable function of
      the network's activations (the explained target; ``boxes`` must be differentiable for a coordinate target);
    * optionally ``class_scores`` ``(n, C)`` (the class-score vector of each box: D-RISE's cosine uses it, else
      a one-hot of the label) and ``objectness`` ``(n,)`` (``target="objectness"``, and D-RISE's factor; else
      the score stands in);
    * optionally ``frame`` ``(h, w, H_in, W_in)``: the detector resized the image to ``h x w`` and placed it at
      the top left of its ``H_in x W_in`` input grid (torchvision's transform); without it, the layer's map
      covers the whole image;
    * optionally ``independent_boxes``: a function of a column (0: the score; 1-4: x1, y1, x2, y2) giving that
      value of every box, the same numbers, as one scalar per box each with a graph of its own (no op of one
      box's value reads another's): one backward per box then costs only its own part and is taken instead of
      a batched backward (``backward="auto"``). A function with a true ``by_index`` attribute is called as
      ``f(column, indices)`` and gives the explained boxes' values only (in that order), or None for a column
      it does not give per box.

    ``target_layer`` is the layer used when :func:`explain_detections` gets none: a dotted name, or a function of
    the model giving one. With ``layer_input=True`` that layer's *input* is explained (a detection head's input:
    every level it reads, as a list of maps), not its output.

    Example:
        >>> def forward(model, images):
        ...     out = model(torch.stack(images))  # a user's detector returning boxes, labels, scores
        ...     return [dict(boxes=b, labels=l, scores=s) for b, l, s in out]
        >>> adapter = DetectorAdapter(forward, target_layer="features")  # doctest: +SKIP
    """

    forward: Callable[[nn.Module, list[Tensor]], list[Mapping[str, Any]]]
    target_layer: str | Callable[[nn.Module], str] | None = None
    name: str = "detector"
    layer_input: bool = False


@dataclass(frozen=True)
class Detection:
    """One explained box: where, what, how sure, and its maps by method."""

    box: Box  # x1, y1, x2, y2 in the image's pixels
    label: int
    score: float
    maps: dict[str, Tensor]  # (H, W) in [0, 1]
    raw: dict[str, Tensor]  # the signed maps before the ReLU, (H, W) ((3, H, W) for guided backprop)
    image: int  # which image
    index: int | None  # the box's index in the detector's output for that image (None: no match)
    reference: Box | None = None  # the user's box it was matched to, if any
    iou: float | None = None  # IoU with the reference box
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DetectionExplanation:
    """The result of :func:`explain_detections`: ``detections[i]`` lists image ``i``'s explained boxes."""

    detections: list[list[Detection]]
    target_layer: str | None
    levels: tuple[str, ...]  # the fused levels of the layer's output ('' for a single map)
    methods: tuple[str, ...]
    target: str
    # "batched" (one vectorised backward per image), "loop" (one per box) or "per box" (each box its own graph:
    # an R-CNN's re-scored boxes)
    backward: str | None
    warnings: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------- detectors


def _torchvision_detector_types() -> tuple[type, ...]:
    try:
        from torchvision.models.detection.fcos import FCOS
        from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
        from torchvision.models.detection.retinanet import RetinaNet
        from torchvision.models.detection.ssd import SSD
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return ()
    return (GeneralizedRCNN, RetinaNet, FCOS, SSD)


def _torchvision_forward(model: nn.Module, images: list[Tensor]) -> list[Mapping[str, Any]]:
    """torchvision's detector on ``images``, with each image's frame read from its transform's output; an R-CNN's
    kept boxes re-scored on their own proposals (:class:`_RCNNBoxes`) when the scores are to be differentiated."""
    frames: list[tuple[int, int, int, int]] = []

    def keep(_module: nn.Module, _inputs: Any, output: Any) -> None:
        image_list = output[0]
        height, width = (int(v) for v in image_list.tensors.shape[-2:])
        frames[:] = [(int(h), int(w), height, width) for h, w in image_list.image_sizes]

    transform: Any = model.transform
    handles = [transform.register_forward_hook(keep)]
    boxes = _RCNNBoxes.attach(model, handles)
    dense = _DenseBoxes.attach(model, handles) if boxes is None else None
    try:
        outputs = model(images)
    finally:
        for handle in handles:
            handle.remove()
    # re-scored only when the recorded graph starts at the target layer (under the guided rule it starts at the
    # input, and the box head's ReLUs must take that rule)
    if torch.is_grad_enabled() and not any(x.requires_grad for x in images):
        sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in images]
        if boxes is not None:
            outputs = boxes.rescored(outputs, sizes)
        elif dense is not None:
            outputs = dense.rescored(outputs, sizes, frames)
    return [{**out, "frame": frame} for out, frame in zip(outputs, frames, strict=True)]


class _RCNNBoxes:
    """The kept boxes of a torchvision R-CNN (Faster, Mask, Keypoint) computed again from their own proposals.

    An R-CNN scores all of its proposals (1000 per image) with the box head, then keeps a few boxes. Each kept
    box's score depends on one proposal's row only, but a backward from it through the recorded forward runs the
    box head's backward over every proposal's row, once per box. Here the box head runs a second time on the
    kept boxes' proposals alone (``box_roi_pool``, ``box_head``, ``box_predictor``, then the softmax and the
    box decoding of ``postprocess_detections`` and the transform's resize): the same numbers, row by row, whose
    backward costs a few rows. Each kept box is matched to its proposal by its score (equal to the float) and
    its box; if any box does not match, the outputs are left as they were.
    """

    def __init__(self, heads: Any) -> None:
        self.heads = heads
        self.inputs: tuple | None = None
        self.predicted: tuple[Tensor, Tensor] | None = None

    @classmethod
    def attach(cls, model: nn.Module, handles: list[Any]) -> _RCNNBoxes | None:
        try:
            from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
        except ImportError:  # pragma: no cover - torchvision is a dependency
            return None
        heads: Any = getattr(model, "roi_heads", None)
        if not isinstance(model, GeneralizedRCNN) or not all(
            isinstance(getattr(heads, name, None), nn.Module) for name in ("box_roi_pool", "box_head", "box_predictor")
        ):
            return None
        boxes = cls(heads)

        def inputs(_module: nn.Module, args: tuple) -> None:
            if boxes.inputs is None:
                boxes.inputs = args

        def predicted(_module: nn.Module, _args: Any, output: Any) -> None:
            if boxes.predicted is None and isinstance(output, tuple) and len(output) == 2:
                boxes.predicted = output

        handles.append(heads.register_forward_pre_hook(inputs))
        handles.append(heads.box_predictor.register_forward_hook(predicted))
        return boxes

    def rescored(self, outputs: list[dict[str, Any]], sizes: list[tuple[int, int]]) -> list[dict[str, Any]]:
        from torchvision.models.detection.transform import resize_boxes
        from torchvision.ops import boxes as box_ops

        if self.inputs is None or self.predicted is None or len(self.inputs) < 3:
            return outputs
        features, proposals, image_shapes = self.inputs[:3]
        class_logits, box_regression = self.predicted
        if not isinstance(proposals, list) or class_logits.shape[0] != sum(len(p) for p in proposals):
            return outputs
        counts = [len(p) for p in proposals]
        probabilities = F.softmax(class_logits.detach(), -1).split(counts)
        every = self.heads.box_coder.decode(box_regression.detach(), [p.detach() for p in proposals]).split(counts)
        rows = []
        for i, (out, scores) in enumerate(zip(outputs, probabilities, strict=True)):
            labels, kept = out["labels"], out["scores"].detach()
            boxes = resize_boxes(
                box_ops.clip_boxes_to_image(every[i][:, labels], image_shapes[i]).reshape(-1, 4), image_shapes[i],
                sizes[i],
            ).reshape(len(scores), len(labels), 4)  # fmt: skip
            # (proposals, boxes): the proposal that gave each box, by its score and its box
            hit = (scores[:, labels] == kept[None, :]) & (boxes - out["boxes"].detach()[None]).abs().amax(dim=2).le(
                1e-3 * (1 + out["boxes"].detach().abs().amax(dim=1))[None]
            )
            if not bool(hit.any(dim=0).all()):
                return outputs
            rows.append(hit.to(torch.uint8).argmax(dim=0))
        chosen = [p[r].detach() for p, r in zip(proposals, rows, strict=True)]
        heads = self.heads
        # one RoI pooling per box: each box's value then has a graph of its own, through its own pooling only
        count = sum(len(c) for c in chosen)
        if not count:
            return outputs
        owners = [(i, j) for i in range(len(chosen)) for j in range(len(chosen[i]))]
        pooled = [
            heads.box_roi_pool(features, [c[j : j + 1] if k == i else c[:0] for k, c in enumerate(chosen)],
                               image_shapes)  # fmt: skip
            for i, j in owners
        ]
        rows_in = torch.cat([p.detach() for p in pooled]).requires_grad_(True)
        logits, regression = heads.box_predictor(heads.box_head(rows_in))
        alone, _ = heads.box_predictor(heads.box_head(rows_in[:1].detach()))
        if not torch.allclose(alone, logits[:1].detach(), rtol=1e-4, atol=1e-5):
            return outputs  # a box head that mixes its rows
        decoded = heads.box_coder.decode(regression, chosen)  # (n, classes, 4)
        labels = torch.cat([out["labels"] for out in outputs])
        index = torch.arange(count, device=labels.device)
        scores = F.softmax(logits, -1)[index, labels]
        spans = self._spans(outputs)
        boxes = torch.cat([
            resize_boxes(box_ops.clip_boxes_to_image(decoded[span][index[span] - span.start, out["labels"]],
                                                     image_shapes[i]), image_shapes[i], sizes[i])
            for i, (out, span) in enumerate(zip(outputs, spans, strict=True))
        ])  # fmt: skip
        # each box's values depend on its own row only: one backward of a value kind's sum gives every row's
        # gradient; a box's value is then carried by <gradient, its pooled row> (the same gradient at the layer,
        # through its own RoI pooling alone) plus the detached remainder (the same value). Computed for the one
        # kind that is explained, when it is asked for.
        values = torch.cat([scores[:, None], boxes], dim=1)  # (n, 5): score, x1, y1, x2, y2
        for out, span in zip(outputs, spans, strict=True):
            if not (
                torch.allclose(values[span, 0].detach(), out["scores"].detach(), rtol=1e-4, atol=1e-6)
                and torch.allclose(values[span, 1:].detach(), out["boxes"].detach(), rtol=1e-4, atol=1e-3)
            ):
                return outputs
        made: dict[int, list[Tensor]] = {}

        def carried(column: int) -> list[Tensor]:
            if column not in made:
                (gradient,) = torch.autograd.grad(values[:, column].sum(), rows_in, retain_graph=True)
                linear = [(p[0] * gradient[k]).sum() for k, p in enumerate(pooled)]
                made[column] = [v + (values[k, column].detach() - v.detach()) for k, v in enumerate(linear)]
            return made[column]

        return [
            {**out, "independent_boxes": lambda column, span=span: carried(column)[span]}
            for out, span in zip(outputs, spans, strict=True)
        ]

    @staticmethod
    def _spans(outputs: list[dict[str, Any]]) -> list[slice]:
        spans, start = [], 0
        for out in outputs:
            spans.append(slice(start, start + len(out["labels"])))
            start += len(out["labels"])
        return spans


_POINTWISE = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.Identity)
_AnchorPick = tuple[int, int, int, int, int]  # (level, row, col, anchor at the position, label)


def _same_gradient(live: Tensor, carried: Tensor | None, feature: Tensor) -> bool:
    """Whether a box's score computed on its window has the gradient of its score through the whole head at the
    head's input ``feature``: one full backward, for the first box, as a check that the window is the head's."""
    if carried is None or live.grad_fn is None or carried.grad_fn is None or not feature.requires_grad:
        return False
    (full,) = torch.autograd.grad(live, feature, retain_graph=True, allow_unused=True)
    (window,) = torch.autograd.grad(carried, feature, retain_graph=True, allow_unused=True)
    if full is None or window is None:
        return False
    return bool(torch.allclose(window, full, rtol=1e-3, atol=1e-5 * (float(full.abs().max()) + 1e-30)))


def _every_module(module: nn.Module) -> list[nn.Module]:
    """``module`` and its submodules in call order, a module used twice listed twice (ultralytics' ``Conv``
    blocks share one ``SiLU``: ``modules()`` would list it once)."""
    return [m for _, m in module.named_modules(remove_duplicate=False)]


def _local_layers(modules: list[nn.Module]) -> list[nn.Module] | None:
    """The leaf layers of a head, in order, when each works position by position or on a "same"-padded window
    (convolutions of stride 1 and odd kernels, eval batch norms, pointwise activations) and the last is a
    convolution; else None."""
    leaves = [m for m in modules if not list(m.children())]
    for m in leaves:
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size
            if m.stride != (1, 1) or m.dilation != (1, 1) or k[0] % 2 == 0 or k[1] % 2 == 0:
                return None
            if m.padding != (k[0] // 2, k[1] // 2) or m.padding_mode != "zeros":
                return None
        elif isinstance(m, nn.BatchNorm2d):
            if m.training:
                return None
        elif not isinstance(m, _POINTWISE):
            return None
    if not leaves or not isinstance(leaves[-1], nn.Conv2d):
        return None
    return leaves


class _DenseBoxes:
    """The explained boxes' scores of a torchvision RetinaNet or SSD computed again from a window of their level.

    A box's score comes from one anchor's class logits at one position of one level, but a backward through the
    recorded forward runs the classification head's backward over every position of every level, once per box.
    The head is local: convolutions (stride 1, "same" padding), eval batch norms and pointwise activations, so an
    anchor's logits read only the level's window of radius ``R`` (the convolutions' radii added up: 5 for
    RetinaNet's five 3 x 3, 1 for SSDlite's depthwise 3 x 3 and 1 x 1) around its position. Here the head runs on
    each explained box's window alone (each convolution without padding, the window shrinking to the centre, zero
    outside the level at each convolution's input, as its padding makes it), the boxes of a level as one batch,
    and the score is RetinaNet's sigmoid of the logit or SSD's softmax over the anchor's classes. Each box is
    matched to its anchor by its score and its box (the anchor's decoded box, as ``postprocess_detections`` and
    the transform make it). A head with any other layer (RetinaNet v2's group norms read the whole level), a box
    that does not match one anchor, or a score that is not the same keeps the full graph. The box coordinates
    keep the full graph (only the score column is computed per box).
    """

    def __init__(self, model: nn.Module, softmax: bool) -> None:
        self.model = model
        self.softmax = softmax  # SSD's scores; RetinaNet's: the sigmoid of one logit
        self.features: list[Tensor] | None = None
        self.head_outputs: dict[str, Tensor] | None = None
        self.anchors: list[Tensor] | None = None

    @classmethod
    def attach(cls, model: nn.Module, handles: list[Any]) -> _DenseBoxes | None:
        try:
            from torchvision.models.detection.retinanet import RetinaNet
            from torchvision.models.detection.ssd import SSD
        except ImportError:  # pragma: no cover - torchvision is a dependency
            return None
        if not isinstance(model, RetinaNet | SSD):
            return None
        boxes = cls(model, softmax=isinstance(model, SSD))
        if boxes._layers(0) is None:
            return None

        def features(_module: nn.Module, args: tuple) -> None:
            if boxes.features is None and args and isinstance(args[0], list):
                boxes.features = args[0]

        def outputs(_module: nn.Module, _args: Any, output: Any) -> None:
            if boxes.head_outputs is None and isinstance(output, dict):
                boxes.head_outputs = output

        def anchors(_module: nn.Module, _args: Any, output: Any) -> None:
            if boxes.anchors is None and isinstance(output, list):
                boxes.anchors = output

        head: Any = model.head
        handles.append(head.register_forward_pre_hook(features))
        handles.append(head.register_forward_hook(outputs))
        handles.append(model.anchor_generator.register_forward_hook(anchors))
        return boxes

    def _layers(self, level: int) -> list[nn.Module] | None:
        """The classification head's layers on ``level`` in order, or None when one is not local and pointwise
        (a norm layer other than an eval batch norm, a stride, a dilation, padding other than "same"), or the
        head is not torchvision's (a user's ``head=``)."""
        head: Any = getattr(getattr(self.model, "head", None), "classification_head", None)
        if head is None:
            return None
        if self.softmax:
            blocks = getattr(head, "module_list", None)
            if not isinstance(blocks, nn.ModuleList) or level >= len(blocks):
                return None
            modules = _every_module(blocks[level])
        else:
            conv, logits = getattr(head, "conv", None), getattr(head, "cls_logits", None)
            if not isinstance(conv, nn.Module) or not isinstance(logits, nn.Conv2d):
                return None
            modules = [*_every_module(conv), logits]
        return _local_layers(modules)

    def rescored(
        self, outputs: list[dict[str, Any]], sizes: list[tuple[int, int]], frames: list[tuple[int, int, int, int]]
    ) -> list[dict[str, Any]]:
        """The outputs with an ``independent_boxes`` function of each image's boxes that computes the chosen
        boxes' scores on their windows when it is called (``by_index``: only the boxes explained)."""
        if self.features is None or self.head_outputs is None or self.anchors is None:
            return outputs
        found = [self._layers(level) for level in range(len(self.features))]
        if any(layers is None for layers in found):
            return outputs
        levels: list[list[nn.Module]] = found  # type: ignore[assignment]
        result = []
        for i, out in enumerate(outputs):

            def own(column: int, indices: list[int], i: int = i, out: dict[str, Any] = out) -> list[Tensor] | None:
                if column != 0:
                    return None  # the box coordinates keep the full graph
                return self._scores(i, out, indices, sizes[i], frames[i], levels)

            own.by_index = True  # type: ignore[attr-defined]
            result.append({**out, "independent_boxes": own})
        return result

    def _scores(
        self,
        i: int,
        out: dict[str, Any],
        indices: list[int],
        size: tuple[int, int],
        frame: tuple[int, int, int, int],
        layers: list[list[nn.Module]],
    ) -> list[Tensor] | None:
        """Boxes ``indices`` of image ``i``: each one's score with a graph of its own, through its window (None
        when a box matches no single anchor or its score is not the same); ``layers``: each level's head."""
        from torchvision.models.detection.transform import resize_boxes
        from torchvision.ops import boxes as box_ops

        model: Any = self.model
        assert self.features is not None and self.head_outputs is not None and self.anchors is not None
        logits, regression = self.head_outputs["cls_logits"], self.head_outputs["bbox_regression"]
        classes = int(logits.shape[-1])
        starts, per_position = [0], []
        for level, feature in enumerate(self.features):
            last = layers[level][-1]
            assert isinstance(last, nn.Conv2d)
            if last.out_channels % classes:
                return None
            per_position.append(last.out_channels // classes)
            starts.append(starts[-1] + int(feature.shape[-2]) * int(feature.shape[-1]) * per_position[-1])
        if logits.shape[1] != starts[-1]:
            return None
        image_shape = (frame[0], frame[1])
        detached = logits[i].detach()
        probabilities = F.softmax(detached, dim=-1) if self.softmax else torch.sigmoid(detached)
        picks: list[_AnchorPick] = []
        for k in indices:
            label, score, box = int(out["labels"][k]), out["scores"][k].detach(), out["boxes"][k].detach()
            near = torch.nonzero((probabilities[:, label] - score).abs() <= 1e-6 * float(score) + 1e-12)[:, 0]
            if not len(near):
                return None
            decoded = model.box_coder.decode_single(regression[i, near].detach(), self.anchors[i][near])
            decoded = resize_boxes(box_ops.clip_boxes_to_image(decoded, image_shape), image_shape, size)
            same = (decoded - box[None]).abs().amax(dim=1) <= 1e-3 * (1 + float(box.abs().max()))
            if int(same.sum()) != 1:
                return None  # no anchor, or several, gave this box
            anchor = int(near[same][0])
            level = next(li for li in range(len(self.features)) if anchor < starts[li + 1])
            position, a = divmod(anchor - starts[level], per_position[level])
            row, col = divmod(position, int(self.features[level].shape[-1]))
            picks.append((level, row, col, a, label))
        return _window_scores(self.features, i, picks, layers, classes, out["scores"][indices], self.softmax)


def _window_scores(
    features: list[Tensor],
    i: int,
    picks: list[_AnchorPick],
    layers: list[list[nn.Module]],
    classes: int,
    live: Tensor,
    softmax: bool,
) -> list[Tensor] | None:
    """The picks' carried scores of image ``i``, level by level (:func:`_level_window_scores`; ``layers``: each
    level's head), or None unless every score equals the model's (``live``, in the picks' order) and the first
    pick's gradient equals the one through the whole head."""
    if not all(features[p[0]].requires_grad for p in picks):
        return None  # a level computed before the target layer (or a layer inside the head): the full graph
    scores: list[Tensor | None] = [None] * len(picks)
    carried: list[Tensor | None] = [None] * len(picks)
    for level in sorted({p[0] for p in picks}):
        chosen = [k for k, p in enumerate(picks) if p[0] == level]
        found = _level_window_scores(features[level], i, [picks[k] for k in chosen], layers[level], classes, softmax)
        for k, (value, linear) in zip(chosen, found, strict=True):
            scores[k], carried[k] = value, linear
    if not torch.allclose(torch.stack(scores).detach(), live.detach(), rtol=1e-4, atol=1e-7):  # type: ignore[arg-type]
        return None
    if not _same_gradient(live[0], carried[0], features[picks[0][0]]):
        return None
    return carried  # type: ignore[return-value]


def _level_window_scores(
    feature: Tensor, i: int, picks: list[_AnchorPick], layers: list[nn.Module], classes: int, softmax: bool
) -> list[tuple[Tensor, Tensor]]:
    """Each pick's ``(score, carried score)`` on one level (``feature``): the head ``layers`` on the picks'
    windows, one batch; the score is the sigmoid of the pick's logit, or with ``softmax`` (SSD) the softmax over
    its anchor's classes."""
    h, w = int(feature.shape[-2]), int(feature.shape[-1])
    convolutions = [m for m in layers if isinstance(m, nn.Conv2d)]
    ry = sum(m.kernel_size[0] // 2 for m in convolutions)
    rx = sum(m.kernel_size[1] // 2 for m in convolutions)
    windows, masks, spans = [], [], []
    for _, row, col, _, _ in picks:
        r0, r1 = max(row - ry, 0), min(row + ry + 1, h)
        c0, c1 = max(col - rx, 0), min(col + rx + 1, w)
        window = feature.new_zeros((feature.shape[1], 2 * ry + 1, 2 * rx + 1))
        mask = feature.new_zeros((1, 2 * ry + 1, 2 * rx + 1))
        rows, cols = slice(r0 - row + ry, r1 - row + ry), slice(c0 - col + rx, c1 - col + rx)
        window[:, rows, cols] = feature[i, :, r0:r1, c0:c1].detach()
        mask[:, rows, cols] = 1
        windows.append(window)
        masks.append(mask)
        spans.append((r0, r1, c0, c1, rows, cols))
    x = torch.stack(windows).requires_grad_(True)
    mask = torch.stack(masks)
    y, top, left = x, 0, 0
    for module in layers:
        if isinstance(module, nn.Conv2d):
            # zero outside the level at the convolution's input (what its padding makes), then the
            # convolution without padding: the window shrinks towards its centre
            y = y * mask[:, :, top : mask.shape[2] - top, left : mask.shape[3] - left]
            y = F.conv2d(y, module.weight, module.bias, groups=module.groups)
            top, left = top + module.kernel_size[0] // 2, left + module.kernel_size[1] // 2
        else:
            y = module(y)  # an eval batch norm or an activation: position by position
    centre = y[:, :, 0, 0]  # (n, anchors * classes) at the picks' positions
    rows_of = torch.tensor([a * classes for _, _, _, a, _ in picks], device=y.device)
    if softmax:
        block = centre.gather(1, rows_of[:, None] + torch.arange(classes, device=y.device)[None])
        labels = torch.tensor([p[4] for p in picks], device=y.device)
        values = F.softmax(block, dim=-1).gather(1, labels[:, None])[:, 0]
    else:
        index = rows_of + torch.tensor([p[4] for p in picks], device=y.device)
        values = torch.sigmoid(centre.gather(1, index[:, None])[:, 0])
    (gradient,) = torch.autograd.grad(values.sum(), x)
    # each box's score, carried by <gradient, its window of the live level> (the same gradient at the layer,
    # through that window alone) plus the detached remainder (the same value)
    found = []
    for k, (r0, r1, c0, c1, rows, cols) in enumerate(spans):
        linear = (feature[i, :, r0:r1, c0:c1] * gradient[k][:, rows, cols]).sum()
        found.append((values[k].detach(), linear + (values[k].detach() - linear.detach())))
    return found


TORCHVISION = DetectorAdapter(_torchvision_forward, target_layer="backbone", name="torchvision")


YOLO_CONFIDENCE = 0.001  # ultralytics' validation defaults: every candidate above this, NMS at IoU 0.7, 300 boxes
YOLO_NMS_IOU = 0.7
YOLO_MAX_BOXES = 300
YOLO_PAD = 114 / 255  # ultralytics' letterbox grey


def class_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou: float) -> Tensor:
    """Class-aware NMS in one call: the indices kept, by decreasing score, as torchvision's ``batched_nms``.

    Each class's boxes are moved, in float64, by ``label * (span + 1)`` with ``span`` the range of all
    coordinates, so that boxes of different classes never overlap and one ``nms`` does every class (on CPU,
    ``batched_nms`` calls ``nms`` once per class for more than 1000 boxes; its own one-call shift uses the
    largest coordinate only, which lets classes overlap when a box starts left of or above the image).

    Example:
        >>> b = torch.tensor([[0.0, 0, 10, 10], [1.0, 1, 10, 10], [0.0, 0, 10, 10]])
        >>> class_nms(b, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1]), 0.5).tolist()
        [0, 2]
    """
    from torchvision.ops import nms

    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    wide = boxes.double()
    step = float(wide.max() - wide.min()) + 1.0
    return nms(wide + (labels.double() * step)[:, None], scores.double(), iou)


def _is_ultralytics(model: nn.Module) -> bool:
    head = getattr(getattr(model, "model", None), "__getitem__", None)
    return type(model).__module__.startswith("ultralytics") and head is not None and hasattr(model, "stride")


def _yolo_head_name(model: nn.Module) -> str:
    return f"model.{len(model.model) - 1}"  # type: ignore[arg-type]


def _yolo_forward(
    model: nn.Module, images: list[Tensor], confidence: float = YOLO_CONFIDENCE
) -> list[Mapping[str, Any]]:
    """ultralytics YOLO (v8/11, anchor-free) explained through its raw head, before NMS.

    The images are padded (bottom and right, letterbox grey) to a common size that is a multiple of the largest
    stride, not resized. The head gives, per anchor, a box (centre x, centre y, w, h in input pixels) and the
    sigmoid score of every class; a candidate's class is its best score, candidates above ``confidence`` go
    through class-aware NMS (:func:`class_nms`, IoU ``YOLO_NMS_IOU``), and a box's score is the class
    score of the anchor that produced it, read from the head's output: differentiable, one graph for all boxes.
    """
    stride = int(max(float(s) for s in model.stride))  # type: ignore[union-attr]
    height = max(int(im.shape[-2]) for im in images)
    width = max(int(im.shape[-1]) for im in images)
    grid_h, grid_w = math.ceil(height / stride) * stride, math.ceil(width / stride) * stride
    rows = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    if len(set(rows)) == 1:  # one size (D-RISE's masked copies): one pad of the stacked batch
        batch = F.pad(torch.stack(images), (0, grid_w - width, 0, grid_h - height), value=YOLO_PAD)
    else:
        batch = torch.stack(
            [F.pad(im, (0, grid_w - w, 0, grid_h - h), value=YOLO_PAD) for im, (h, w) in zip(images, rows, strict=True)]
        )
    windows = _YoloBoxes.attach(model)
    try:
        output = model(batch)
    finally:
        if windows is not None:
            windows.detach_hook()
    # scored per box only when the recorded graph starts at the target layer (the layer's hook turned autograd on;
    # under the guided rule it starts at the input, and the head's activations must take that rule)
    if not torch.is_grad_enabled() or batch.requires_grad or any(im.requires_grad for im in images):
        windows = None
    raw = output[0] if isinstance(output, list | tuple) else output  # (B, 4 + classes, anchors)
    found: list[Mapping[str, Any]] = []
    for b, (h, w) in enumerate(rows):
        centre_x, centre_y, box_w, box_h = raw[b, :4]
        boxes = torch.stack([centre_x - box_w / 2, centre_y - box_h / 2, centre_x + box_w / 2, centre_y + box_h / 2], 1)
        classes = raw[b, 4:]  # (classes, anchors)
        best, labels = classes.detach().max(dim=0)
        candidates = (best > confidence).nonzero()[:, 0] if confidence > 0 else torch.arange(best.numel())
        keep = class_nms(boxes.detach()[candidates], best[candidates], labels[candidates], YOLO_NMS_IOU)
        anchors = candidates[keep[:YOLO_MAX_BOXES]]
        item = dict(
            boxes=boxes[anchors],
            labels=labels[anchors],
            scores=classes[labels[anchors], anchors],
            class_scores=classes[:, anchors].T,
            frame=(h, w, grid_h, grid_w),
            anchors=anchors,
        )
        if windows is not None and windows.features is not None:
            item["independent_boxes"] = windows.scorer(b, item)
        found.append(item)
    return found


class _YoloBoxes:
    """The explained boxes' class scores of an ultralytics YOLO (v8/11) from a window of their own level.

    A box's score is the sigmoid of one class logit of the classification branch (``cv3``) at its anchor's
    position; the branch is convolutions with their batch norms and SiLUs, "same"-padded, so the logit reads a
    window of the level (radius 2 for YOLOv8's two 3 x 3). The anchor of each box is the one its NMS kept, so no
    matching is needed; the windows are computed as :class:`_DenseBoxes` does (one batch per level, each
    convolution without padding, zero outside the level at its input), and a score that is not the same keeps
    the full graph. The box coordinates keep the full graph.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.handle: Any = None
        self.features: list[Tensor] | None = None

    @classmethod
    def attach(cls, model: nn.Module) -> _YoloBoxes | None:
        head: Any = model.model[-1]  # type: ignore[index]
        branches = getattr(head, "cv3", None)
        if branches is None or not all(_local_layers(_every_module(b)) is not None for b in branches):
            return None
        boxes = cls(model)

        def features(_module: nn.Module, args: tuple) -> None:
            if boxes.features is None and args and isinstance(args[0], list | tuple):
                boxes.features = list(args[0])  # the head replaces the list's items as it goes

        boxes.handle = head.register_forward_pre_hook(features)
        return boxes

    def detach_hook(self) -> None:
        self.handle.remove()

    def scorer(self, b: int, item: dict[str, Any]) -> Callable[..., list[Tensor] | None]:
        def own(column: int, indices: list[int]) -> list[Tensor] | None:
            return self._scores(b, item, indices) if column == 0 else None  # the coordinates: the full graph

        own.by_index = True  # type: ignore[attr-defined]
        return own

    def _scores(self, b: int, item: dict[str, Any], indices: list[int]) -> list[Tensor] | None:
        assert self.features is not None
        head: Any = self.model.model[-1]  # type: ignore[index]
        sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in self.features]
        starts = [0]
        for h, w in sizes:
            starts.append(starts[-1] + h * w)
        picks = []
        for k in indices:
            anchor, label = int(item["anchors"][k]), int(item["labels"][k])
            if anchor >= starts[-1]:
                return None
            level = next(li for li in range(len(sizes)) if anchor < starts[li + 1])
            row, col = divmod(anchor - starts[level], sizes[level][1])
            picks.append((level, row, col, 0, label))
        layers: Any = [_local_layers(_every_module(branch)) for branch in head.cv3]  # all local: checked by attach
        return _window_scores(self.features, b, picks, layers, int(head.nc), item["scores"][indices], softmax=False)


ULTRALYTICS = DetectorAdapter(_yolo_forward, target_layer=_yolo_head_name, name="ultralytics", layer_input=True)


HF_MEAN = (0.485, 0.456, 0.406)  # DetrImageProcessor's normalisation (RT-DETR's processor only rescales)
HF_STD = (0.229, 0.224, 0.225)


def _hf_kind(model: nn.Module) -> str | None:
    name = type(model).__name__
    if not type(model).__module__.startswith("transformers"):
        return None
    if name in ("DetrForObjectDetection", "ConditionalDetrForObjectDetection", "DeformableDetrForObjectDetection"):
        return "detr"
    if name in ("RTDetrForObjectDetection", "RTDetrV2ForObjectDetection"):
        return "rtdetr"
    return None


def _hf_forward(model: nn.Module, images: list[Tensor]) -> list[Mapping[str, Any]]:
    """Hugging Face DETR / RT-DETR: one box per query, explained through the query that produced it.

    The images are padded (bottom and right; DETR gets a ``pixel_mask``, RT-DETR a size that is a multiple of
    32) and not resized; DETR's input is normalised as its image processor does, RT-DETR's is in [0, 1]. A
    query's label is its best class: DETR's softmax over the classes without the no-object one, RT-DETR's
    sigmoid (focal) score; its score is that probability, differentiable; boxes (centre, size, relative) are
    scaled to the image's pixels (DETR's to the image, RT-DETR's to the padded input it saw).
    """
    kind = _hf_kind(model)
    multiple = 32 if kind == "rtdetr" else 1
    height = max(int(im.shape[-2]) for im in images)
    width = max(int(im.shape[-1]) for im in images)
    grid_h, grid_w = math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple
    rows = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    batch = torch.stack([F.pad(im, (0, grid_w - w, 0, grid_h - h)) for im, (h, w) in zip(images, rows, strict=True)])
    if kind == "rtdetr":
        output = model(pixel_values=batch)
        probabilities = output.logits.sigmoid()
    else:
        mean = torch.tensor(HF_MEAN, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(HF_STD, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
        mask = torch.zeros(len(images), grid_h, grid_w, dtype=torch.long, device=batch.device)
        for b, (h, w) in enumerate(rows):
            mask[b, :h, :w] = 1
        output = model(pixel_values=(batch - mean) / std, pixel_mask=mask)
        probabilities = output.logits.softmax(-1)[..., :-1]  # the last class is "no object"
    found: list[Mapping[str, Any]] = []
    for b, (h, w) in enumerate(rows):
        scale_h, scale_w = (grid_h, grid_w) if kind == "rtdetr" else (h, w)
        cx, cy, bw, bh = output.pred_boxes[b].unbind(-1)
        boxes = torch.stack([(cx - bw / 2) * scale_w, (cy - bh / 2) * scale_h, (cx + bw / 2) * scale_w,
                             (cy + bh / 2) * scale_h], dim=1)  # fmt: skip
        labels = probabilities[b].detach().argmax(dim=-1)
        queries = torch.arange(labels.numel(), device=labels.device)
        found.append(
            dict(
                boxes=boxes,
                labels=labels,
                scores=probabilities[b][queries, labels],
                class_scores=probabilities[b],
                frame=(h, w, grid_h, grid_w),
                queries=queries,
            )
        )
    return found


def _hf_layer(model: nn.Module) -> str:
    # DETR: the projection of the backbone's last map that the encoder reads (every query attends to it);
    # RT-DETR: the hybrid encoder's input projections' deepest level
    return "model.input_projection" if _hf_kind(model) == "detr" else "model.encoder_input_proj.2"


HUGGING_FACE = DetectorAdapter(_hf_forward, target_layer=_hf_layer, name="huggingface")


def is_detector(model: nn.Module, adapter: DetectorAdapter | None = None) -> bool:
    """Whether :func:`explain_detections` can read boxes from ``model``: a detector it recognises
    (torchvision's, ultralytics YOLO, Hugging Face DETR-like) or any model given an ``adapter``."""
    if adapter is not None:
        return True
    return isinstance(model, _torchvision_detector_types()) or _is_ultralytics(model) or _hf_kind(model) is not None


def adapter_for(model: nn.Module, adapter: DetectorAdapter | None = None) -> DetectorAdapter:
    """The adapter for ``model``: the one given, torchvision's for its detectors, else a clear error."""
    if adapter is not None:
        if not isinstance(adapter, DetectorAdapter):
            raise TypeError(f"adapter must be a camlens.detection.DetectorAdapter, not {type(adapter).__name__}")
        return adapter
    if isinstance(model, _torchvision_detector_types()):
        if model.training:
            raise ValueError(
                f"the {type(model).__name__} is in training mode (torchvision detectors then return losses): "
                "call model.eval() first"
            )
        return TORCHVISION
    if _is_ultralytics(model):
        return ULTRALYTICS
    if _hf_kind(model) is not None:
        if model.training:
            raise ValueError(f"the {type(model).__name__} is in training mode: call model.eval() first")
        return HUGGING_FACE
    raise ValueError(
        f"camlens does not know how to read boxes from a {type(model).__name__}: pass "
        "adapter=camlens.detection.DetectorAdapter(forward) with forward(model, images) returning a dict of "
        "boxes, labels and differentiable scores per image"
    )


# ---------------------------------------------------------------------------------------------- the forward


class _LevelHook:
    """Forward hook on the target layer: split each map of its output into per-image pieces.

    Recording from the layer (``from_layer``), every piece is a fresh leaf and autograd starts here; otherwise
    (guided backprop records from the input) the pieces are views of the recorded output. Downstream gets the
    pieces stacked again (a new tensor, so an in-place op after the layer cannot overwrite them).
    """

    def __init__(self, name: str, from_layer: bool) -> None:
        self.name = name
        self.from_layer = from_layer
        self.calls = 0
        self.levels: list[tuple[str, list[Tensor]]] = []

    def _split(self, key: str, value: Any) -> Any:
        if not (isinstance(value, Tensor) and value.dim() == 4 and value.is_floating_point()):
            return value
        if self.from_layer:
            pieces = [value[b].detach().requires_grad_(True) for b in range(value.shape[0])]
        else:
            pieces = list(value.unbind(0))
        self.levels.append((key, pieces))
        return torch.stack(pieces)

    def pre(self, _module: nn.Module, args: tuple) -> Any:
        """Forward pre-hook: the same for the layer's first input (a head's list of levels)."""
        if not args:
            return None
        first = self(_module, (), args[0])
        return None if first is None else (first, *args[1:])

    def __call__(self, _module: nn.Module, _inputs: Any, output: Any) -> Any:
        self.calls += 1
        if self.calls > 1:
            return None
        if self.from_layer:
            torch.set_grad_enabled(True)  # restored when the caller's no_grad block exits
        if isinstance(output, Tensor):
            return self._split("", output)
        if isinstance(output, Mapping):
            return type(output)((k, self._split(str(k), v)) for k, v in output.items())  # type: ignore[call-arg]
        if isinstance(output, list | tuple) and not hasattr(output, "_fields"):
            return type(output)(self._split(str(i), v) for i, v in enumerate(output))
        return None


@dataclass
class _Forward:
    outputs: list[Mapping[str, Any]]
    levels: list[tuple[str, list[Tensor]]]  # per level: its (K, u, v) map per image
    inputs: list[Tensor]  # the images as the model saw them (leaves when recorded from the input)
    switch: GuidedSwitch
    guided_rule: dict[str, int] | None
    layer_input: bool = False


def _run(
    model: nn.Module,
    adapter: DetectorAdapter,
    images: list[Tensor],
    layer: tuple[str, nn.Module] | None,
    *,
    guided: bool,
    gradients: bool,
    layer_input: bool = False,
) -> _Forward:
    inputs = []
    for image in images:
        x = image.detach()
        if x.is_inference():
            x = x.clone()
        inputs.append(x.requires_grad_(True) if guided else x)
    switch = GuidedSwitch()
    mode = GuidedMode(switch) if guided else None
    hook = handle = None
    if layer is not None:
        hook = _LevelHook(layer[0], from_layer=gradients and not guided)
        if layer_input:
            handle = layer[1].register_forward_pre_hook(hook.pre)
        else:
            handle = layer[1].register_forward_hook(hook)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.enable_grad() if guided else torch.no_grad())
            if mode is not None:
                stack.enter_context(mode)
            outputs = adapter.forward(model, inputs)
    finally:
        if handle is not None:
            handle.remove()
    _check_outputs(outputs, len(images))
    levels: list[tuple[str, list[Tensor]]] = []
    if hook is not None:
        if hook.calls == 0:
            raise ValueError(f"the target layer {hook.name!r} did not run in the forward pass: pick a layer it uses")
        if hook.calls > 1:
            raise ValueError(
                f"the target layer {hook.name!r} ran {hook.calls} times in one forward: pick a layer that runs once"
            )
        if not hook.levels:
            raise ValueError(
                f"the target layer {hook.name!r} outputs no (B, C, H, W) map (nor a dict, list or tuple of them): "
                "pick a convolutional feature layer"
            )
        levels = hook.levels
    return _Forward(outputs, levels, inputs, switch, None if mode is None else dict(mode.routed), layer_input)


def _check_outputs(outputs: Any, count: int) -> None:
    if not isinstance(outputs, list | tuple) or len(outputs) != count:
        raise ValueError(
            f"the detector's forward must return one dict per image ({count}), got {type(outputs).__name__}"
        )
    for i, out in enumerate(outputs):
        missing = [k for k in ("boxes", "labels", "scores") if not isinstance(out, Mapping) or k not in out]
        if missing:
            raise ValueError(f"the detector's output for image {i} has no {', '.join(missing)}")
        n = out["scores"].shape[0]
        if tuple(out["boxes"].shape) != (n, 4) or out["labels"].shape[0] != n:
            raise ValueError(
                f"image {i}: boxes must be (n, 4) and labels (n,) for n = {n} scores, got "
                f"{tuple(out['boxes'].shape)} and {tuple(out['labels'].shape)}"
            )


# ---------------------------------------------------------------------------------------------- picking boxes


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every box of ``a`` ``(n, 4)`` with every box of ``b`` ``(m, 4)``, x1 y1 x2 y2: ``(n, m)``.

    Example:
        >>> box_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 0, 3, 2], [5.0, 5, 6, 6]]))
        tensor([[0.3333, 0.0000]])
    """
    a, b = a.double(), b.double()
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    overlap = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    union = area_a[:, None] + area_b[None, :] - overlap
    return torch.where(union > 0, overlap / union.clamp(min=1e-300), torch.zeros_like(union)).float()


@dataclass(frozen=True)
class _Pick:
    index: int | None
    reference: Box | None = None
    iou: float | None = None


def match_boxes(
    out: Mapping[str, Any], references: Tensor, labels: Tensor | None = None, iou_threshold: float = 0.5
) -> list[tuple[int | None, float]]:
    """For each reference box ``(r, 4)``: the index of the detector's output box (``out``: boxes, labels, scores) of
    the same label (when ``labels`` are given) with the largest IoU, at least ``iou_threshold`` (among equal IoUs the
    higher score), and that IoU; ``(None, best IoU)`` when none qualifies.

    Example:
        >>> out = dict(boxes=torch.tensor([[0.0, 0, 10, 10], [1.0, 1, 10, 10]]), labels=torch.tensor([1, 2]),
        ...            scores=torch.tensor([0.9, 0.8]))
        >>> match_boxes(out, torch.tensor([[1.0, 1, 10, 10]]), torch.tensor([1]))
        [(0, 0.8100000023841858)]
    """
    scores = out["scores"].detach().float().cpu()
    boxes = out["boxes"].detach().float().cpu()
    found_labels = out["labels"].detach().cpu()
    references = references.detach().float().cpu()
    overlaps = box_iou(references, boxes) if len(boxes) else torch.zeros(len(references), 0)
    found: list[tuple[int | None, float]] = []
    for r in range(len(references)):
        iou = overlaps[r].clone()
        if labels is not None:
            iou[found_labels != labels[r]] = -1.0
        candidates = (iou >= iou_threshold).nonzero()[:, 0].tolist()
        if not candidates:
            found.append((None, float(iou.clamp(min=0).max()) if len(iou) else 0.0))
            continue
        best = max(candidates, key=lambda k: (float(iou[k]), float(scores[k])))
        found.append((int(best), float(iou[best])))
    return found


def _pick(
    out: Mapping[str, Any],
    score_threshold: float,
    max_detections: int | None,
    references: Tensor | None,
    reference_labels: Tensor | None,
    iou_threshold: float,
) -> list[_Pick]:
    if references is None:
        scores = out["scores"].detach().float().cpu()
        keep = (scores >= score_threshold).nonzero()[:, 0]
        order = keep[scores[keep].argsort(descending=True, stable=True)]
        if max_detections is not None:
            order = order[:max_detections]
        return [_Pick(int(k)) for k in order]
    matches = match_boxes(out, references, reference_labels, iou_threshold)
    return [
        _Pick(index, tuple(float(v) for v in references[r]), iou)  # type: ignore[arg-type]
        for r, (index, iou) in enumerate(matches)
    ]


def _target_values(out: Mapping[str, Any], indices: list[int], target: str) -> Tensor:
    if target == "score":
        return out["scores"][indices]
    if target == "objectness":
        if out.get("objectness") is None:
            raise ValueError(
                "target='objectness': this detector gives no objectness score (torchvision's, DETR's and "
                "YOLOv8's have none); use target='score' or a coordinate"
            )
        return out["objectness"][indices]
    return out["boxes"][indices, _COORDINATES[target]]


# ---------------------------------------------------------------------------------------------- gradients


def _box_gradients(values: Tensor, pieces: list[Tensor], backward: str, retain: bool) -> tuple[list[Tensor], str]:
    """``d values[j] / d pieces`` for every ``j``: one ``(n, K, u, v)`` tensor per piece, and how it was done."""
    n = values.shape[0]
    if backward in ("auto", "batched"):
        try:
            with _warnings.catch_warnings():
                _warnings.filterwarnings("ignore", message=".*[Bb]atching rule.*")
                found = torch.autograd.grad(
                    values,
                    pieces,
                    grad_outputs=torch.eye(n, dtype=values.dtype, device=values.device),
                    is_grads_batched=True,
                    retain_graph=True,
                    allow_unused=True,
                )
            return [_zeros_if_none(g, p, n) for g, p in zip(found, pieces, strict=True)], "batched"
        except RuntimeError:
            if backward == "batched":
                raise
    columns: list[list[Tensor]] = [[] for _ in pieces]
    for j in range(n):
        found = torch.autograd.grad(values[j], pieces, retain_graph=retain or j < n - 1, allow_unused=True)
        for column, g, p in zip(columns, found, pieces, strict=True):
            column.append(torch.zeros_like(p) if g is None else g)
    return [torch.stack(c) for c in columns], "loop"


def _separate_gradients(values: list[Tensor], pieces: list[Tensor]) -> list[Tensor]:
    """``d values[j] / d pieces`` for values with graphs of their own: one backward each, stacked per piece."""
    columns: list[list[Tensor]] = [[] for _ in pieces]
    for value in values:
        found = torch.autograd.grad(value, pieces, retain_graph=True, allow_unused=True)
        for column, g, p in zip(columns, found, pieces, strict=True):
            column.append(torch.zeros_like(p) if g is None else g)
    return [torch.stack(c) for c in columns]


def _zeros_if_none(g: Tensor | None, piece: Tensor, n: int) -> Tensor:
    return piece.new_zeros((n, *piece.shape)) if g is None else g


def _fuse(level_maps: list[Tensor], frame: tuple[int, int, int, int] | None, size: tuple[int, int]) -> Tensor:
    """Sum ``(n, u_l, v_l)`` level maps on the network's input grid, then crop and resize to the image ``size``."""
    if frame is None:
        return sum(resize(m, size) for m in level_maps)  # type: ignore[return-value]
    h, w, grid_h, grid_w = frame
    fused = sum(resize(m, (grid_h, grid_w)) for m in level_maps)
    return resize(fused[:, :h, :w], size)  # type: ignore[index]


# ---------------------------------------------------------------------------------------------- D-RISE


def drise_masks(
    count: int,
    size: tuple[int, int],
    *,
    grid: int = 16,
    probability: float = 0.5,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """RISE's random masks (Petsiuk et al. 2018, as D-RISE uses them): ``(count, H, W)`` in [0, 1].

    A ``grid x grid`` binary grid (each cell kept with ``probability``), upsampled bilinearly to
    ``(grid + 1) * ceil(H / grid)`` by ``(grid + 1) * ceil(W / grid)``, cropped to ``H x W`` at a random shift
    of less than one cell.

    Example:
        >>> m = drise_masks(3, (20, 30), grid=4, generator=torch.Generator().manual_seed(0))
        >>> m.shape, bool(m.min() >= 0), bool(m.max() <= 1)
        (torch.Size([3, 20, 30]), True, True)
    """
    height, width = size
    cell_h, cell_w = math.ceil(height / grid), math.ceil(width / grid)
    cells = (torch.rand(count, 1, grid, grid, generator=generator) < probability).float()
    big = F.interpolate(cells, size=((grid + 1) * cell_h, (grid + 1) * cell_w), mode="bilinear", align_corners=False)
    shift_y = torch.randint(0, cell_h, (count,), generator=generator)
    shift_x = torch.randint(0, cell_w, (count,), generator=generator)
    masks = torch.stack(
        [
            big[i, 0, int(dy) : int(dy) + height, int(dx) : int(dx) + width]
            for i, (dy, dx) in enumerate(zip(shift_y, shift_x, strict=True))
        ]
    )
    return masks.to(device) if device is not None else masks


def _class_vectors(out: Mapping[str, Any], classes: int) -> Tensor:
    if out.get("class_scores") is not None:
        return out["class_scores"].detach().float()
    labels = out["labels"].detach().long()
    return F.one_hot(labels, num_classes=max(classes, int(labels.max()) + 1 if len(labels) else 1)).float()


def _confidence(out: Mapping[str, Any]) -> Tensor:
    found = out.get("objectness")
    return (found if found is not None else out["scores"]).detach().float()


def drise_weights(
    target_boxes: Tensor,
    target_vectors: Tensor,
    boxes: Tensor,
    vectors: Tensor,
    confidence: Tensor,
) -> Tensor:
    """D-RISE's weight of one masked image for each target (Petsiuk et al., CVPR 2021, section 3.2): ``(t,)``.

    ``max_j IoU(L_t, L_j) * cos(P_t, P_j) * O_j`` over the masked image's detections ``j`` (0 when it has none),
    with ``P`` the class-score vectors (a one-hot of the label where the detector gives only labels) and ``O``
    the objectness (the detection's score where the detector has none).
    """
    if boxes.shape[0] == 0:
        return target_boxes.new_zeros(target_boxes.shape[0])
    width = max(target_vectors.shape[1], vectors.shape[1])
    tv = F.pad(target_vectors, (0, width - target_vectors.shape[1]))
    v = F.pad(vectors, (0, width - vectors.shape[1]))
    cosine = F.normalize(tv, dim=1) @ F.normalize(v, dim=1).T  # (t, m)
    similarity = box_iou(target_boxes, boxes) * cosine * confidence[None, :]
    return similarity.amax(dim=1)


def _drise_weights_batched(
    target_boxes: Tensor, target_vectors: Tensor, outputs: Sequence[Mapping[str, Any]]
) -> Tensor:
    """:func:`drise_weights` of several masked images at once, ``(n, t)``: their detections padded to the largest
    count, the padding left out of each maximum (an image with no detection weighs 0)."""
    n, t = len(outputs), target_boxes.shape[0]
    counts = [int(out["boxes"].shape[0]) for out in outputs]
    most = max(counts, default=0)
    if most == 0:
        return target_boxes.new_zeros(n, t)
    vectors = [_class_vectors(out, target_vectors.shape[1]).cpu() for out in outputs]
    width = max(target_vectors.shape[1], *(v.shape[1] for v in vectors))
    pad = torch.nn.utils.rnn.pad_sequence
    boxes = pad([out["boxes"].detach().float().cpu() for out in outputs], batch_first=True)  # (n, m, 4)
    found = pad([F.pad(v, (0, width - v.shape[1])) if v.shape[1] < width else v for v in vectors], batch_first=True)
    confidence = pad([_confidence(out).cpu() for out in outputs], batch_first=True)
    tv = F.normalize(F.pad(target_vectors, (0, width - target_vectors.shape[1])), dim=1)
    cosine = torch.einsum("tc,nmc->ntm", tv, F.normalize(found, dim=2))
    iou = box_iou(target_boxes, boxes.reshape(-1, 4)).reshape(t, n, most).transpose(0, 1)
    similarity = iou * cosine * confidence[:, None, :]
    real = torch.arange(most)[None, :] < torch.tensor(counts)[:, None]  # (n, m)
    best = similarity.masked_fill(~real[:, None, :], -torch.inf).amax(dim=2)
    return torch.where(torch.tensor(counts)[:, None] > 0, best, torch.zeros_like(best))


def _drise(
    model: nn.Module,
    adapter: DetectorAdapter,
    image: Tensor,
    targets: list[tuple[Tensor, Tensor]],
    *,
    count: int,
    grid: int,
    probability: float,
    batch_size: int,
    seed: int,
) -> Tensor:
    """D-RISE maps ``(t, H, W)``: the weighted mean of ``count`` masks, one weight per mask and target."""
    height, width = image.shape[-2:]
    target_boxes = torch.stack([box for box, _ in targets]).float().cpu()
    target_vectors = torch.stack([vector for _, vector in targets]).float().cpu()
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(len(targets), height, width, dtype=torch.float64)
    done = 0
    while done < count:
        n = min(batch_size, count - done)
        masks = drise_masks(n, (height, width), grid=grid, probability=probability, generator=generator)
        masked = list((image[None] * masks.to(image.device, image.dtype)[:, None]).unbind(0))
        with torch.no_grad():
            outputs = adapter.forward(model, masked)
        _check_outputs(outputs, n)
        weights = _drise_weights_batched(target_boxes, target_vectors, outputs)  # (n, t)
        total += torch.einsum("nt,nhw->thw", weights.float(), masks.float()).double()  # a batch in float32
        done += n
    return (total / count).float()


# ---------------------------------------------------------------------------------------------- the call


def _check_images(images: Any) -> list[Tensor]:
    if isinstance(images, Tensor):
        if images.dim() == 3:
            images = [images]
        elif images.dim() == 4:
            images = list(images.unbind(0))
        else:
            raise ValueError(
                f"images must be (3, H, W) tensors or a (B, 3, H, W) batch, got shape {tuple(images.shape)}"
            )
    if not isinstance(images, list | tuple) or not images:
        raise ValueError("images must be a non-empty list of (3, H, W) tensors or a (B, 3, H, W) batch")
    for i, image in enumerate(images):
        if not isinstance(image, Tensor) or image.dim() != 3 or not image.is_floating_point():
            what = f"shape {tuple(image.shape)} {image.dtype}" if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"image {i} must be a floating-point (3, H, W) tensor in [0, 1], got {what}")
    return list(images)


def _references(boxes: Any, labels: Any, count: int) -> tuple[list[Tensor | None], list[Tensor | None]]:
    if boxes is None:
        if labels is not None:
            raise ValueError("labels are the classes of the reference boxes: pass boxes too")
        return [None] * count, [None] * count
    if len(boxes) != count:
        raise ValueError(f"boxes must hold one list of reference boxes per image ({count}), got {len(boxes)}")
    if labels is not None and len(labels) != count:
        raise ValueError(f"labels must hold one list of classes per image ({count}), got {len(labels)}")
    found_boxes: list[Tensor | None] = []
    found_labels: list[Tensor | None] = []
    for i in range(count):
        b = torch.as_tensor(boxes[i], dtype=torch.float32).reshape(-1, 4) if len(boxes[i]) else torch.zeros(0, 4)
        if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
            raise ValueError(f"image {i}: a reference box has x2 < x1 or y2 < y1 (boxes are x1, y1, x2, y2)")
        found_boxes.append(b)
        if labels is None:
            found_labels.append(None)
            continue
        lab = torch.as_tensor(labels[i], dtype=torch.long).reshape(-1)
        if len(lab) != len(b):
            raise ValueError(f"image {i}: {len(b)} reference boxes but {len(lab)} labels")
        found_labels.append(lab)
    return found_boxes, found_labels


def explain_detections(
    model: nn.Module,
    images: Sequence[Tensor] | Tensor,
    methods: Sequence[str] | str = ("gradcam",),
    target_layer: str | nn.Module | None = None,
    score_threshold: float = 0.5,
    max_detections: int | None = None,
    boxes: Sequence[Any] | None = None,
    labels: Sequence[Any] | None = None,
    target: str = "score",
    *,
    adapter: DetectorAdapter | None = None,
    iou_threshold: float = 0.5,
    masks: int = 1000,
    mask_grid: int = 16,
    mask_probability: float = 0.5,
    batch_size: int = 16,
    seed: int = 0,
    backward: str = "auto",
) -> DetectionExplanation:
    """Explain each box a detector finds (or each reference box it matches) with several methods.

    Args:
        model: a torchvision detector in eval mode, or any detector with an ``adapter``; left as found.
        images: a list of ``(3, H, W)`` tensors in [0, 1] (as torchvision detectors take them), or a batch.
        methods: names from :func:`detection_methods`.
        target_layer: a module or dotted name; None: the adapter's layer (torchvision: ``backbone``, every
            FPN level fused). A layer returning several maps is explained at all of them, fused (see above).
        score_threshold, max_detections: which boxes to explain (score at least this, the best first).
        boxes, labels: reference boxes per image (x1, y1, x2, y2 pixels) and optionally their classes: each is
            matched to the output box of the same class with the largest IoU (at least ``iou_threshold``), as
            pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``; an unmatched one gets empty maps and a warning.
        target: ``"score"`` (the box's class score), ``"x1"``, ``"y1"``, ``"x2"``, ``"y2"`` (a coordinate) or
            ``"objectness"`` (where the detector gives one).
        adapter: how to run a detector camlens does not know (:class:`DetectorAdapter`).
        masks, mask_grid, mask_probability, batch_size, seed: D-RISE's masks (count, grid cells, keep
            probability), masked images per forward, and the random seed.
        backward: ``"auto"`` (batched, else per box), ``"batched"`` or ``"loop"``.

    Example:
        >>> import torchvision
        >>> net = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        ...     weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=64).eval()
        >>> result = explain_detections(net, [torch.rand(3, 48, 64)], ["gradcam", "odam"], score_threshold=0.0,
        ...                             max_detections=2)
        >>> result.target_layer, result.detections[0][0].maps["odam"].shape
        ('backbone', torch.Size([48, 64]))
    """
    names = check_names(methods, detection_methods(), what="detection method")
    images = _check_images(images)
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {', '.join(BACKWARDS)}, not {backward!r}")
    if max_detections is not None and max_detections < 1:
        raise ValueError(f"max_detections must be at least 1 (or None for all), not {max_detections}")
    references, reference_labels = _references(boxes, labels, len(images))
    with guard(model) as guarded:
        eager = guarded.model
        found = adapter_for(eager, adapter)
        cam_names = [n for n in names if n in CAM_METHODS or n == ODAM]
        if GUIDED_GRADCAM in names and "gradcam" not in cam_names:
            cam_names.append("gradcam")
        guided = GUIDED_BACKPROP in names or GUIDED_GRADCAM in names
        needs_gradient = guided or any(n == ODAM or _uses_gradient(n) for n in cam_names)
        layer = None
        layer_input = target_layer is None and found.layer_input
        if cam_names:
            spec = target_layer if target_layer is not None else found.target_layer
            if callable(spec) and not isinstance(spec, nn.Module):
                spec = spec(eager)
            if spec is None:
                raise ValueError(f"{', '.join(cam_names)} need a target_layer: this adapter names none")
            layer = resolve_layer(eager, spec)
        run = _run(eager, found, images, layer, guided=guided, gradients=needs_gradient, layer_input=layer_input)
        return _explain(
            eager, found, images, names, cam_names, layer, run, score_threshold, max_detections, references,
            reference_labels, iou_threshold, target, backward, guided, needs_gradient,
            dict(count=masks, grid=mask_grid, probability=mask_probability, batch_size=batch_size, seed=seed),
        )  # fmt: skip


def _uses_gradient(name: str) -> bool:
    info = METHOD_INFO.get(name)
    return info is None or info[0] != "activation CAM"


def _explain(
    model: nn.Module,
    adapter: DetectorAdapter,
    images: list[Tensor],
    names: list[str],
    cam_names: list[str],
    layer: tuple[str, nn.Module] | None,
    run: _Forward,
    score_threshold: float,
    max_detections: int | None,
    references: list[Tensor | None],
    reference_labels: list[Tensor | None],
    iou_threshold: float,
    target: str,
    backward: str,
    guided: bool,
    needs_gradient: bool,
    drise_options: dict[str, Any],
) -> DetectionExplanation:
    notes: list[str] = []
    picks = [
        _pick(out, score_threshold, max_detections, references[i], reference_labels[i], iou_threshold)
        for i, out in enumerate(run.outputs)
    ]
    used = None
    result: list[list[Detection]] = []
    for i, (out, image_picks) in enumerate(zip(run.outputs, picks, strict=True)):
        size = (int(images[i].shape[-2]), int(images[i].shape[-1]))
        matched = [p for p in image_picks if p.index is not None]
        indices = [int(p.index) for p in matched]  # type: ignore[arg-type]
        maps: dict[str, Tensor] = {}
        raw: dict[str, Tensor] = {}
        last_image = i == len(images) - 1
        if indices and (cam_names or guided):
            values = _target_values(out, indices, target)
            if needs_gradient and values.grad_fn is None:
                raise ValueError(
                    f"the {target} of the boxes does not depend on the target layer "
                    f"{layer[0] if layer else 'input'!r}: does the detector detach its scores, or run its head "
                    "under torch.no_grad?"
                )
            frame = out.get("frame")
            level_gradients: list[Tensor] = []
            if needs_gradient and run.levels:
                pieces = [level[i] for _, level in run.levels]
                own = out.get("independent_boxes")
                chosen = None
                if backward == "auto" and callable(own) and target in ("score", *_COORDINATES):
                    wanted = 0 if target == "score" else 1 + _COORDINATES[target]
                    if getattr(own, "by_index", False):  # computes the chosen boxes only (None: not per box)
                        chosen = own(wanted, indices)
                    else:
                        chosen = [own(wanted)[k] for k in indices]
                if chosen is not None:
                    level_gradients = _separate_gradients(chosen, pieces)
                    used = "per box"
                else:
                    level_gradients, used = _box_gradients(values, pieces, backward, retain=guided or not last_image)
            for name in cam_names:
                level_maps = []
                for li, (_, level) in enumerate(run.levels):
                    activations = level[i].detach()[None]
                    if _uses_gradient(name):
                        n = len(indices)
                        function = CAM_METHODS["hirescam" if name == ODAM else name]
                        level_maps.append(function(activations.expand(n, *activations.shape[1:]), level_gradients[li]))
                    else:  # one map per image, shared by its boxes
                        shared = CAM_METHODS[name](activations, activations)
                        level_maps.append(shared.expand(len(indices), *shared.shape[1:]))
                raw[name] = _fuse(level_maps, frame, size).detach()
                maps[name] = normalize_per_image(torch.relu(raw[name]))
            if guided:
                run.switch.guided = True
                try:
                    gradient, mode = _box_gradients(values, [run.inputs[i]], backward, retain=not last_image)
                finally:
                    run.switch.guided = False
                used = used or mode
                raw[GUIDED_BACKPROP] = gradient[0].detach()
                maps[GUIDED_BACKPROP] = normalize_per_image(raw[GUIDED_BACKPROP].abs().amax(dim=1))
                if GUIDED_GRADCAM in names:
                    raw[GUIDED_GRADCAM] = raw[GUIDED_BACKPROP] * maps["gradcam"][:, None]
                    maps[GUIDED_GRADCAM] = normalize_per_image(raw[GUIDED_GRADCAM].abs().amax(dim=1))
        if indices and DRISE in names:
            classes = _class_vectors(out, 1)
            targets = [(out["boxes"][k].detach(), classes[k]) for k in indices]
            raw[DRISE] = _drise(model, adapter, images[i].detach(), targets, **drise_options)
            maps[DRISE] = normalize_per_image(raw[DRISE])
        result.append(_detections(i, out, image_picks, names, maps, raw, size, notes))
        if not image_picks:
            top = out["scores"].detach()
            best = f" (the highest is {float(top.max()):.3g})" if len(top) else " (it found none)"
            notes.append(f"image {i}: no box with a score of at least {score_threshold}{best}: lower score_threshold")
    _check_rule(run, guided, notes)
    for note in notes:
        _warnings.warn(note, ExplanationNote, stacklevel=3)
    return DetectionExplanation(
        detections=result,
        target_layer=None if layer is None else layer[0] + (" (input)" if run.layer_input else ""),
        levels=tuple(key for key, _ in run.levels),
        methods=tuple(names),
        target=target,
        backward=used,
        warnings=tuple(notes),
    )


def _check_rule(run: _Forward, guided: bool, notes: list[str]) -> None:
    if guided and not run.guided_rule:
        notes.append(
            "guided backprop: the forward ran no activation the guided rule applies to, so the guided map "
            "is the plain input gradient"
        )


def _detections(
    image: int,
    out: Mapping[str, Any],
    picks: list[_Pick],
    names: list[str],
    maps: dict[str, Tensor],
    raw: dict[str, Tensor],
    size: tuple[int, int],
    notes: list[str],
) -> list[Detection]:
    boxes = out["boxes"].detach().float().cpu()
    labels = out["labels"].detach().cpu()
    scores = out["scores"].detach().float().cpu()
    found = []
    row = 0
    for pick in picks:
        if pick.index is None:
            assert pick.reference is not None
            notes.append(
                f"image {image}: no output box matches the reference box {pick.reference} (best IoU "
                f"{pick.iou:.2f} < the threshold, among boxes of its class): its maps are empty"
            )
            zero = torch.zeros(size)
            found.append(
                Detection(
                    box=pick.reference, label=-1, score=float("nan"),
                    maps={n: zero for n in names}, raw={n: zero for n in names},
                    image=image, index=None, reference=pick.reference, iou=pick.iou,
                )
            )  # fmt: skip
            continue
        k = pick.index
        found.append(
            Detection(
                box=tuple(float(v) for v in boxes[k]),  # type: ignore[arg-type]
                label=int(labels[k]),
                score=float(scores[k]),
                maps={n: maps[n][row] for n in names},
                raw={n: raw[n][row] for n in names},
                image=image,
                index=k,
                reference=pick.reference,
                iou=pick.iou,
            )
        )
        row += 1
    return found


__all__ = [
    "DRISE",
    "ODAM",
    "TARGETS",
    "TORCHVISION",
    "ULTRALYTICS",
    "Detection",
    "DetectionExplanation",
    "DetectorAdapter",
    "adapter_for",
    "box_iou",
    "detection_methods",
    "class_nms",
    "drise_masks",
    "drise_weights",
    "explain_detections",
    "match_boxes",
]
