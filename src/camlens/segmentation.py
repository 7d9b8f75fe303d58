"""Explain a semantic segmentation model: one map per class, all classes from one forward pass.

:func:`explain_segmentation` follows Seg-Grad-CAM (Vinogradova et al., AAAI 2020 student abstract,
arXiv:2002.11434): the score of class ``c`` is the sum of ``c``'s logit over a region,

    ``S_c = sum_{(i, j) in R_c} y_c(i, j)``

by default the pixels predicted as ``c`` (``region="predicted"``); also the whole image (``"image"``), a
single pixel (``region=(row, col)``) or a user's masks (``masks=``). The CAM weighting is the registered
``(A, g)`` function of :mod:`camlens.methods` applied to ``A`` and ``g = dS_c/dA`` at the target layer.

The engine (:func:`camlens.capture.capture`) runs the model once, records only the part after the target
layer, and differentiates the first class's score; the other classes' gradients come from one batched
``torch.autograd.grad`` (``is_grads_batched``) on the same recorded graph (the engine's ``head`` seam), so
``K`` classes cost one forward and ``K`` backward passes through the head only. Where the logits come out of
a final ``F.interpolate`` (torchvision's segmenters resize to the input), the scores are taken before it (a
resize is linear and per channel: one backward of the resize alone gives every class's region on the small
grid), so those ``K`` passes start at the small pre-resize map, not at the full-resolution logits.

**Grad-CAM alone needs no gradient at the layer.** Its weights are the gradient's spatial means, and where
the layer is read only by 2-D convolutions and spatial means (every torchvision head: FCN's ``3 x 3``
convolution from 2048 channels, DeepLabV3's, LRASPP's two branches), :func:`gradient_sums` gets those sums
exactly from each class's gradient at the readers' outputs, skipping the backward through the readers
themselves (the most costly part of a head). ``methods=["gradcam"]`` takes this route (then
``SegmentationExplanation.gradients`` is None); any other method, or another reader, takes the full backward.

**The automatic layer is never the logits.** Grad-CAM at the layer that feeds a segmentation head's final
``1 x 1`` classifier is the class's own logit map (``sum_k w_k A_k`` with ``w_k`` proportional to that
class's classifier weights: a correlation of 1.000 with ``y_c``), which the prediction already shows. The
automatic layer is, per family:

* torchvision ``DeepLabV3`` (ResNet-50/101, MobileNetV3): ``classifier.0``, the ASPP's output (the head's
  context features; a ``3 x 3`` convolution, batch norm and ReLU lie between it and the classifier);
* torchvision ``FCN``: the backbone's output (``backbone.layer4``), the input of the ``FCNHead``;
* torchvision ``LRASPP``: the backbone's high-level output (``backbone.16`` for MobileNetV3-Large);
* Hugging Face ``SegformerForSemanticSegmentation``: the encoder's last stage (``segformer.stages.3`` in
  transformers 5, ``segformer.encoder.layer_norm.3`` before), on the 1/32 grid, the deepest features before
  the all-MLP decode head. That head is per position, so the map is this stage's share of the class's logit
  (the three other stages and a ReLU also enter the logit), not the logit map itself;
* Hugging Face ``UperNetForSemanticSegmentation``: ``decode_head.bottleneck``, the pyramid pooling
  module's output (the FPN and a ``3 x 3`` convolution follow);
* Hugging Face ``Mask2FormerForUniversalSegmentation``: the backbone's last stage (its output norm, tokens on
  the 1/32 grid), which the pixel decoder's deformable attention and the queries of the transformer decoder
  read (inside the pixel decoder, group norms and the per-pixel mask product follow, so no later single map
  is more than a per-position view of the mask features);
* any other model: the deepest channels-first map, among those the score depends on, whose Grad-CAM map
  is not the class's logit map (correlation below 0.99 with it at the layer's resolution, for the class
  with the largest predicted region of the first image); chosen with one extra traced forward pass and
  remembered per model and input size.

Outputs understood: a ``(B, C, h, w)`` tensor, a mapping with ``"out"`` (torchvision) or ``"logits"``,
an object with a ``.logits`` map (Hugging Face ``SemanticSegmenterOutput``), and Mask2Former's query
output (``class_queries_logits`` and ``masks_queries_logits``, combined as its semantic post-processing
does: ``sum_q softmax(class_q)[c] sigmoid(mask_q)``, the no-object class dropped).
"""

from __future__ import annotations

import warnings as _warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge
from torch.overrides import TorchFunctionMode

from camlens.engine import capture, check_input
from camlens.errors import ExplanationNote, check_names
from camlens.explanation import MethodMaps
from camlens.guard import guard
from camlens.layers import CandidateRecorder, resolve_layer
from camlens.layouts import Layout, LayoutError, resolve_layout
from camlens.methods import CAM_METHODS
from camlens.postprocess import cam_to_image

REGIONS = ("predicted", "image")
TRIVIAL_CORRELATION = 0.99  # a layer whose map correlates this much with the class's logit map is the logits

_auto_cache: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, int], str]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class SegmentationExplanation(MethodMaps):
    """The class maps of one :func:`explain_segmentation` call.

    Attributes:
        maps: ``maps[method]`` is ``(B, K, H, W)`` in [0, 1], ``K = len(classes)``, at the input's size.
        raw: ``raw[method]`` is ``(B, K, u, v)``, the signed layer-resolution map ``sum_k w_k A_k``.
        classes: the explained class ids, in the order of the maps' second axis.
        predicted: ``(B, h, w)`` class ids at the output's resolution (argmax of the class scores).
        logits: ``(B, C, h, w)`` the model's dense class scores (detached).
        scores: ``(B, K)`` the explained scores ``S_c`` (the logit summed over each region).
        regions: ``(B, K, h, w)`` bool, the pixels each score sums over.
        target_layer: the explained layer's dotted name.
        layout: how its output was read as ``(B, K, u, v)``.
        warnings: what is legal but suspicious (a class absent from an image's region: its map is zero).
    """

    maps: dict[str, Tensor]
    raw: dict[str, Tensor]
    classes: tuple[int, ...]
    predicted: Tensor
    logits: Tensor
    scores: Tensor
    regions: Tensor
    target_layer: str
    layout: Layout | None = None
    warnings: tuple[str, ...] = ()
    activations: Tensor | None = field(default=None, repr=False, compare=False)
    # (B, K, channels, u, v); None for Grad-CAM alone on a layer read by convolutions and means (gradient_sums)
    gradients: Tensor | None = field(default=None, repr=False, compare=False)

    def class_map(self, method: str, class_id: int) -> Tensor:
        """``(B, H, W)``: ``method``'s map of class ``class_id`` for every image."""
        if class_id not in self.classes:
            raise ValueError(f"class {class_id} was not explained; explained: {list(self.classes)}")
        return self.maps[method][:, self.classes.index(class_id)]


def segmentation_logits(output: Any) -> Tensor:
    """The dense class scores ``(B, C, h, w)`` inside a segmentation model's output.

    Raises:
        ValueError: an output with no such map (the message says what it holds).
    """
    found: Any = None
    if isinstance(output, Tensor):
        found = output
    elif isinstance(getattr(output, "masks_queries_logits", None), Tensor):  # Mask2Former, MaskFormer
        classes = torch.softmax(output.class_queries_logits, dim=-1)[..., :-1]  # drop the no-object class
        found = torch.einsum("bqc,bqhw->bchw", classes, output.masks_queries_logits.sigmoid())
    elif isinstance(output, Mapping):
        found = output.get("out", output.get("logits"))
    else:
        found = getattr(output, "logits", None)
    if not isinstance(found, Tensor) or found.dim() != 4:
        what = (
            f"a tensor of shape {tuple(found.shape)}"
            if isinstance(found, Tensor)
            else (
                f"a {type(output).__name__} with keys {sorted(map(str, output))[:6]}"
                if isinstance(output, Mapping)
                else f"a {type(output).__name__}"
            )
        )
        raise ValueError(
            f"explain_segmentation needs dense class scores (B, C, h, w): a tensor, a mapping with 'out' or "
            f"'logits', or an object with .logits; the model returned {what}"
        )
    return found


def _family_layer(model: nn.Module) -> str | None:
    """The documented automatic layer of a known segmentation family (see the module doc), or None."""
    kind = type(model).__name__
    if kind in ("DeepLabV3", "FCN", "LRASPP") and hasattr(model, "backbone"):
        if kind == "DeepLabV3":
            return "classifier.0"
        wanted = "high" if kind == "LRASPP" else "out"
        for name, key in getattr(model.backbone, "return_layers", {}).items():
            if key == wanted:
                return f"backbone.{name}"
    if kind == "SegformerForSemanticSegmentation":
        segformer: Any = model.segformer  # a Hugging Face module: its attributes are not nn.Module's
        stages = getattr(segformer, "stages", None)  # transformers 5: stages that output (B, C, h, w)
        if stages is not None:
            return f"segformer.stages.{len(stages) - 1}"
        return f"segformer.encoder.layer_norm.{len(segformer.encoder.layer_norm) - 1}"  # tokens
    if kind == "UperNetForSemanticSegmentation":
        return "decode_head.bottleneck"
    if kind == "Mask2FormerForUniversalSegmentation":
        inner: Any = model.model  # a Hugging Face module: its attributes are not nn.Module's
        norms: Any = getattr(inner.pixel_level_module.encoder, "hidden_states_norms", None)
        if norms is not None and len(norms):
            return (
                f"model.pixel_level_module.encoder.hidden_states_norms.{list(norms)[-1]}"  # the backbone's last stage
            )
    return None


def _check_classes(classes: Any, num_classes: int) -> list[int] | None:
    if classes is None:
        return None
    if isinstance(classes, Tensor):
        classes = classes.flatten().tolist()
    if isinstance(classes, int) and not isinstance(classes, bool):
        classes = [classes]
    if not isinstance(classes, Sequence) or not all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        raise TypeError("classes must be None, an int or a sequence of ints (class ids)")
    values = list(dict.fromkeys(int(c) for c in classes))
    if not values:
        raise ValueError("classes is empty: pass None (the predicted classes) or some class ids")
    for value in values:
        if not 0 <= value < num_classes:
            raise ValueError(
                f"class {value} is out of range: the model scores {num_classes} classes (0..{num_classes - 1})"
            )
    return values


def _check_masks(masks: Any, batch: int, size: tuple[int, int], image: tuple[int, int]) -> Tensor:
    """User masks as ``(B, 1 or K, h, w)`` bool at the output's resolution (nearest resize from the input's)."""
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be a tensor (B, H, W) or (B, K, H, W), not {type(masks).__name__}")
    m = masks.detach()
    if m.dim() == 2:
        m = m[None].expand(batch, -1, -1)
    if m.dim() == 3:
        m = m[:, None]
    if m.dim() != 4 or m.shape[0] != batch:
        raise ValueError(f"masks must be (B, H, W) or (B, K, H, W) for a batch of {batch}, got {tuple(masks.shape)}")
    if tuple(m.shape[-2:]) not in (size, image):
        raise ValueError(
            f"masks are {tuple(m.shape[-2:])}: give them at the input's size {image} or the output's {size}"
        )
    m = m.to(torch.float32)
    if tuple(m.shape[-2:]) != size:
        m = F.interpolate(m, size=size, mode="nearest")
    return m > 0


def class_ids(logits: Tensor) -> Tensor:
    """``(B, h, w)``: the index of each pixel's largest class score (the first on a tie), as ``argmax(dim=1)``;
    ``max(dim=1)`` gives the same indices several times faster over the class axis of a ``(B, C, h, w)`` map.

    Example:
        >>> class_ids(torch.tensor([[[[0.0, 2.0]], [[1.0, 2.0]]]])).tolist()
        [[[1, 0]]]
    """
    return logits.max(dim=1).indices


def _regions(
    logits: Tensor, region: Any, masks: Tensor | None, classes: list[int] | None, image: tuple[int, int]
) -> tuple[list[int], Tensor, Tensor]:
    """The explained classes, their regions ``(B, K, h, w)`` bool and the predicted classes ``(B, h, w)``, from
    the detached logits."""
    batch, num_classes, h, w = logits.shape
    predicted = class_ids(logits)
    if masks is not None:
        where: Tensor | None = _check_masks(masks, batch, (h, w), image)
    elif isinstance(region, str):
        if region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS} or a pixel (row, col), not {region!r}")
        where = None if region == "predicted" else torch.ones(batch, 1, h, w, dtype=torch.bool, device=logits.device)
    elif (
        isinstance(region, Sequence)
        and len(region) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in region)
    ):
        row, col = region
        if not (0 <= row < h and 0 <= col < w):
            raise ValueError(f"pixel {tuple(region)} lies outside the output's {h} x {w} grid")
        where = torch.zeros(batch, 1, h, w, dtype=torch.bool, device=logits.device)
        where[:, :, row, col] = True
    else:
        raise TypeError(f"region must be 'predicted', 'image' or a pixel (row, col), not {region!r}")
    if classes is None:
        inside = predicted[:, None] if where is None else torch.where(where, predicted[:, None], -1)
        classes = [int(c) for c in torch.unique(inside).tolist() if c >= 0]
        if not classes:
            raise ValueError("no pixel lies inside the given masks: there is no predicted class to explain")
    index = torch.as_tensor(classes, device=logits.device)
    if where is None:
        regions = predicted[:, None] == index[None, :, None, None]
    else:
        if where.shape[1] not in (1, len(classes)):
            raise ValueError(f"masks has {where.shape[1]} masks per image for {len(classes)} classes")
        regions = where.expand(batch, len(classes), h, w)
    return classes, regions, predicted


def explain_segmentation(
    model: nn.Module,
    images: Tensor,
    methods: Sequence[str] | str = ("gradcam",),
    classes: int | Sequence[int] | Tensor | None = None,
    masks: Tensor | None = None,
    target_layer: str | nn.Module | None = None,
    *,
    region: str | tuple[int, int] = "predicted",
) -> SegmentationExplanation:
    """One map per class and method for a semantic segmentation model, all classes from one forward pass.

    Args:
        model: any ``nn.Module`` whose output holds dense class scores (see :func:`segmentation_logits`);
            left exactly as found.
        images: ``(B, C, H, W)``, preprocessed as the model expects; not modified.
        methods: names of :data:`camlens.methods.CAM_METHODS` (``gradcam``, ``gradcam++``, ``layercam`` ...).
        classes: the class ids to explain; None: every class predicted somewhere in the region (in the whole
            image for ``region="predicted"``), over the batch.
        masks: ``(B, H, W)`` (one region for every class) or ``(B, K, H, W)`` (one per class) at the input's or
            the output's size: the score sums each class's logit over its mask (overrides ``region``).
        target_layer: a module or dotted name; None: the family's documented layer (module doc), never the logits.
        region: ``"predicted"`` (Seg-Grad-CAM: the pixels predicted as the class), ``"image"`` (every pixel)
            or a pixel ``(row, col)`` of the output's grid.

    Example:
        >>> import torch, torchvision
        >>> net = torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=3)
        >>> result = explain_segmentation(net.eval(), torch.rand(1, 3, 64, 64), classes=[0, 2])
        >>> result.target_layer, result["gradcam"].shape
        ('backbone.layer4', torch.Size([1, 2, 64, 64]))
    """
    names = check_names(
        methods,
        list(CAM_METHODS),
        where=" for explain_segmentation, which computes the (activations, gradients) methods",
    )
    check_input(model, images)
    image = (int(images.shape[-2]), int(images.shape[-1]))
    state: dict[str, Any] = {}
    resizes = _FinalResize()

    def target(output: Any) -> Tensor:
        resizes.watching = False
        logits = segmentation_logits(output)
        if logits.shape[0] != images.shape[0]:
            raise ValueError(f"the model's class scores have batch {logits.shape[0]}, not {images.shape[0]}")
        wanted = _check_classes(classes, int(logits.shape[1]))
        chosen, regions, predicted = _regions(logits.detach(), region, masks, wanted, image)
        index = torch.as_tensor(chosen, device=logits.device)
        scores = resizes.scores(logits, index, regions)
        if scores is None:
            scores = (logits[:, index] * regions.to(logits.dtype)).flatten(2).sum(dim=2)  # (B, K)
        state.update(logits=logits, classes=chosen, regions=regions, scores=scores, predicted=predicted)
        return scores[:, 0]

    def head(_output: Any, activations: Tensor, _picked: Any) -> dict[str, Tensor]:
        scores: Tensor = state["scores"]
        wanted = names == ["gradcam"]  # Grad-CAM reads the gradient only through its spatial sums
        if wanted and resolve_layout(tuple(activations.shape), image, eager, layer[1], None).kind == "nchw":
            sums = gradient_sums(scores, activations)
            if sums is not None:
                state["sums"] = sums
                mean = (sums[0] / activations.shape[-2:].numel()).to(activations.dtype)
                return {"layer_gradients": mean[..., None, None].expand(activations.shape)}
        count = scores.shape[1]
        if count < 2:
            return {}
        # the other classes' gradients, batched: one-hot grad_outputs over classes 1..K-1
        one_hot = torch.eye(count, dtype=scores.dtype, device=scores.device)[1:, None, :]
        (gradients,) = torch.autograd.grad(
            scores, [activations], grad_outputs=one_hot.expand(-1, scores.shape[0], -1).contiguous(),
            retain_graph=True, is_grads_batched=True, allow_unused=True,
        )  # fmt: skip
        if gradients is None:
            gradients = torch.zeros((count - 1, *activations.shape), dtype=activations.dtype, device=activations.device)
        return {"segmentation_gradients": gradients.detach()}

    with guard(model) as guarded:
        eager = guarded.model
        layer = _layer(eager, images, target_layer)
        with resizes:
            cap = capture(eager, images, target, layer, head=head)
    assert cap.activations is not None and cap.gradients is not None and cap.layout is not None
    chosen: list[int] = state["classes"]
    count, batch = len(chosen), int(images.shape[0])
    activations = cap.activations
    u, v = activations.shape[-2:]
    raw: dict[str, Tensor] = {}
    gradients: Tensor | None = None
    if "sums" in state:  # Grad-CAM alone, from the gradient's spatial sums (see gradient_sums)
        weights = (state["sums"] / (u * v)).to(activations.dtype)  # (K, B, channels): w_k = mean_ij g_kij
        raw["gradcam"] = torch.einsum("kbc,bcuv->bkuv", weights, activations)
    else:
        gradients = cap.gradients[None]
        if count > 1:
            others = cap.extras["segmentation_gradients"]
            spatial = cap.layout.to_spatial(others.flatten(0, 1)).reshape(count - 1, *cap.gradients.shape)
            gradients = torch.cat([gradients, spatial], dim=0)  # (K, B, channels, u, v)
        a = activations[None].expand(count, *activations.shape).flatten(0, 1)
        g = gradients.flatten(0, 1)
        for name in names:
            raw[name] = CAM_METHODS[name](a, g).reshape(count, batch, u, v).transpose(0, 1)
    maps = {
        name: cam_to_image(one.flatten(0, 1), image).reshape(batch, count, *image).to(activations.dtype)
        for name, one in raw.items()
    }
    regions: Tensor = state["regions"]
    logits: Tensor = state["logits"].detach()
    notes = []
    empty = (~regions.flatten(2).any(dim=2)).nonzero().tolist()
    if empty:
        pairs = ", ".join(f"image {b} class {chosen[k]}" for b, k in empty[:10])
        more = f" and {len(empty) - 10} more" if len(empty) > 10 else ""
        notes.append(f"the region is empty for {pairs}{more}: their score is 0 and their maps are zero")
    if "gradcam" in names and gradients is not None:
        # a score unchanged by shifting a channel by a constant (a group or instance norm follows) has channel-mean
        # weights that vanish: Grad-CAM's map is then rounding noise
        top = gradients.abs().flatten(2).amax(dim=2)  # (K, B)
        mean = gradients.mean(dim=(-2, -1)).abs().flatten(2).amax(dim=2)
        vanish = ((mean <= 1e-4 * top) & (top > 0)).T.nonzero().tolist()
        if vanish:
            pairs = ", ".join(f"image {b} class {chosen[k]}" for b, k in vanish[:10])
            notes.append(
                f"gradcam: at layer {cap.layer_name!r} the channel weights (the gradient's spatial means) vanish for "
                f"{pairs}: the score ignores a constant shift of each channel (a group or instance norm follows), "
                "so the map is rounding noise; layercam or hirescam weigh each position"
            )
    for note in notes:
        _warnings.warn(note, ExplanationNote, stacklevel=2)
    return SegmentationExplanation(
        maps=maps,
        raw=raw,
        classes=tuple(chosen),
        predicted=state["predicted"],
        logits=logits,
        scores=state["scores"].detach(),
        regions=regions,
        target_layer=str(cap.layer_name),
        layout=cap.layout,
        warnings=tuple(notes),
        activations=activations,
        gradients=None if gradients is None else gradients.transpose(0, 1),
    )


def gradient_sums(scores: Tensor, activations: Tensor) -> Tensor | None:
    """``(K, B, channels)``: ``sum_ij dS_c/dA_k(i, j)`` for every column ``c`` of ``scores`` ``(B, K)``, at the
    recorded layer output ``activations`` ``(B, channels, u, v)``, without the per-position gradient; None
    where something else than 2-D convolutions and spatial means reads the layer (then only the full backward
    gives the sums), and where a norm that takes statistics over the positions (group, layer or instance norm,
    batch norm in training mode) lies after it: there the score may ignore a constant shift of a channel, so
    that the sums vanish into rounding, which only the per-position gradient tells apart (and
    :func:`explain_segmentation` then warns). Sums of low-precision gradients are taken in float32.

    Grad-CAM needs only these sums (``w_k = mean_ij g_kij``). Every reader of ``A`` is found in the recorded
    autograd graph (the nodes with an edge to ``A``'s copy), and the classes' gradients are taken at the
    readers' outputs rather than at ``A``: the backward through the readers themselves, the most costly
    part of a segmentation head (FCN's ``3 x 3`` convolution from 2048 channels), is replaced by sums.

    * A convolution ``y = conv(A, W)`` (any stride, padding, dilation, groups):
      ``sum_i dS/dA_k(i) = sum_{o, t} W[o, k, t] T[o, t]`` with ``T[o, t]`` the sum of ``dS/dy_o`` over the
      output positions whose tap ``t`` lands inside ``A`` (zero padding lies outside). Exact.
    * A mean over the positions (``adaptive_avg_pool2d(A, 1)``) or an adaptive average pooling: each output
      cell's gradient is spread over its window with weights summing to one, so the sum is the sum over cells.

    Example:
        >>> conv = nn.Conv2d(2, 3, 3, padding=1)
        >>> A = torch.rand(1, 2, 5, 5, requires_grad=True)
        >>> copy = A.clone()
        >>> scores = conv(copy).sum(dim=(2, 3))  # (B, K = 3)
        >>> sums = gradient_sums(scores, A)
        >>> full = torch.stack([torch.autograd.grad(scores[:, c].sum(), A, retain_graph=True)[0] for c in range(3)])
        >>> torch.allclose(sums, full.sum(dim=(-2, -1)), atol=1e-5)
        True
    """
    if activations.dim() != 4 or scores.dim() != 2 or scores.grad_fn is None:
        return None
    parents: dict[Any, list[tuple[Any, int]]] = {}  # node -> [(a node that reads its output, at which input)]
    stack, seen = [scores.grad_fn], {scores.grad_fn}
    while stack:
        node = stack.pop()
        for position, (child, _) in enumerate(node.next_functions):
            if child is None:
                continue
            parents.setdefault(child, []).append((node, position))
            if child not in seen:
                seen.add(child)
                stack.append(child)
        if type(node).__name__ in _POSITION_NORMS or getattr(node, "_saved_training", False):
            return None  # a group, layer or instance norm (or a batch norm in training) follows the layer
    leaf = [n for n in parents if type(n).__name__ == "AccumulateGrad" and n.variable is activations]
    if len(leaf) != 1 or len(parents[leaf[0]]) != 1 or type(parents[leaf[0]][0][0]).__name__ != "CloneBackward0":
        return None  # the layer's output is read other than through the engine's one copy
    readers = parents.get(parents[leaf[0]][0][0], [])
    u, v = activations.shape[-2:]
    for node, position in readers:
        kind = type(node).__name__
        if kind == "ConvolutionBackward0":
            weight = node._saved_weight
            if position != 0 or node._saved_transposed or weight.dim() != 4:
                return None
        elif kind == "MeanBackward1":
            saved = node._saved_dim  # None: the mean of everything
            dims = None if saved is None else {int(d) % 4 for d in saved}
            if dims != {2, 3} or len(node._saved_self_sym_sizes) != 4:
                return None
        elif kind != "AdaptiveAvgPool2DBackward0":
            return None
    if not readers:
        return None
    count, batch = scores.shape[1], scores.shape[0]
    one_hot = torch.eye(count, dtype=scores.dtype, device=scores.device)[:, None, :].expand(-1, batch, -1)
    edges = [GradientEdge(node, 0) for node, _ in readers]
    # one backward per class on the recorded graph: torch's batched gradients (is_grads_batched) fall back to a
    # loop and copies for the convolution and batch-norm backward on CPU, measured slower than this loop
    per_class = [
        torch.autograd.grad(scores, edges, grad_outputs=one_hot[c], retain_graph=True, allow_unused=True)
        for c in range(count)
    ]
    grads = [None if per_class[0][i] is None else torch.stack([g[i] for g in per_class]) for i in range(len(edges))]
    wide = torch.promote_types(activations.dtype, torch.float32)
    total = torch.zeros(count, batch, activations.shape[1], dtype=wide, device=activations.device)
    for (node, _), grad in zip(readers, grads, strict=True):
        if grad is None:
            continue
        if type(node).__name__ == "ConvolutionBackward0":
            total += _convolution_sums(
                grad.to(wide), node._saved_weight, (int(u), int(v)), node._saved_stride, node._saved_padding,
                node._saved_dilation, int(node._saved_groups),
            )  # fmt: skip
        else:
            total += grad.reshape(count, batch, activations.shape[1], -1).to(wide).sum(dim=-1)
    return total


# the autograd nodes of norms whose statistics read the positions (a batch norm counts in training mode only)
_POSITION_NORMS = frozenset({"NativeGroupNormBackward0", "NativeLayerNormBackward0"})


def _convolution_sums(
    grad: Tensor, weight: Tensor, size: tuple[int, int], stride: Sequence[int], padding: Sequence[int],
    dilation: Sequence[int], groups: int,
) -> Tensor:  # fmt: skip
    """``(K, B, C_in)``: the convolution's input gradient summed over the input's positions, from the output
    gradient ``grad`` ``(K, B, C_out, q1, q2)`` (see :func:`gradient_sums`)."""
    inside = []
    for axis in range(2):
        taps = torch.arange(weight.shape[2 + axis], device=grad.device)
        cells = torch.arange(grad.shape[3 + axis], device=grad.device)
        where = cells[None, :] * int(stride[axis]) - int(padding[axis]) + int(dilation[axis]) * taps[:, None]
        inside.append(((where >= 0) & (where < size[axis])).to(grad.dtype))  # (taps, cells)
    tapped = inside[0] @ (grad @ inside[1].T)  # (K, B, C_out, taps1, taps2): T[o, t]
    out, per_group = weight.shape[:2]
    k, b = grad.shape[:2]
    tapped = tapped.reshape(k * b, groups, out // groups, -1)
    w = weight.detach().reshape(groups, out // groups, per_group, -1).to(grad.dtype)
    return torch.einsum("ngot,goct->ngc", tapped, w).reshape(k, b, groups * per_group)


class _FinalResize(TorchFunctionMode):
    """Remembers the ``F.interpolate`` calls of one forward, so that a class score over logits that come out of a
    final resize (torchvision's segmenters: bilinear to the input's size) is taken before it.

    A resize is linear and acts on each channel alone, so ``S_c = <R_c, resize(L)_c> = <resize^T(R_c), L_c>``:
    one backward of the resize alone gives every class's region on the pre-resize grid, and the classes' batched
    backward passes then start from the small ``(C, h, w)`` map ``L`` instead of the full-resolution logits
    (the same score and gradients, up to rounding, at a fraction of the cost).
    """

    def __init__(self) -> None:
        super().__init__()
        self.watching = True
        self.calls: list[tuple[Tensor, tuple, dict[str, Any]]] = []  # (result, args, kwargs)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.watching and func is F.interpolate and args and isinstance(result, Tensor) and result.requires_grad:
            self.calls.append((result, args, kwargs))
        return result

    def scores(self, logits: Tensor, index: Tensor, regions: Tensor) -> Tensor | None:
        """``(B, K)`` the region sums of ``logits[:, index]`` taken before the resize that made ``logits``, or
        None when no recorded resize did."""
        found = next((call for call in reversed(self.calls) if call[0] is logits), None)
        self.calls.clear()
        if found is None:
            return None
        _, args, kwargs = found
        before = args[0]
        if not isinstance(before, Tensor) or before.dim() != 4 or before.shape[:2] != logits.shape[:2]:
            return None
        with torch.enable_grad():
            small = before.detach()[:, index].requires_grad_(True)
            resized = F.interpolate(small, *args[1:], **kwargs)
            (weights,) = torch.autograd.grad(resized, small, grad_outputs=regions.to(resized.dtype))
        return (before[:, index] * weights).flatten(2).sum(dim=2)


def segmentation_layer(model: nn.Module, images: Tensor) -> tuple[str, nn.Module]:
    """The automatic target layer of a segmentation model for inputs like ``images`` (see the module doc)."""
    with guard(model) as guarded:
        return _layer(guarded.model, images, None)


def _layer(model: nn.Module, images: Tensor, target_layer: str | nn.Module | None) -> tuple[str, nn.Module]:
    if target_layer is not None:
        return resolve_layer(model, target_layer)
    name = _family_layer(model)
    if name is None:
        name = _auto_cache.get(model, {}).get(tuple(images.shape[-2:]))  # type: ignore[arg-type]
    if name is None:
        name = _search_layer(model, images)
        _auto_cache.setdefault(model, {})[(int(images.shape[-2]), int(images.shape[-1]))] = name
    return resolve_layer(model, name)


_PASS = (nn.Dropout, nn.Dropout2d, nn.Identity)


def _search_layer(model: nn.Module, images: Tensor) -> str:
    """The generic rule (module doc): one traced forward of the first image; the deepest channels-first map
    whose path to the logits mixes positions and whose Grad-CAM map is not the class's logit map."""
    x = images[:1].detach().clone().requires_grad_(True)
    size = (int(images.shape[-2]), int(images.shape[-1]))
    with torch.inference_mode(False), torch.enable_grad(), CandidateRecorder(model, 1) as recorder:
        output = model(x)
    logits = segmentation_logits(output)
    h, w = logits.shape[-2:]
    predicted = class_ids(logits.detach())[0]
    cls = int(torch.bincount(predicted.flatten(), minlength=logits.shape[1]).argmax())
    class_map = logits[0, cls].detach()
    # probe pixels: the centres of a 3 x 3 grid over the output, each scored by its predicted class
    pixels = [(int((2 * i + 1) * h // 6), int((2 * j + 1) * w // 6)) for i in range(3) for j in range(3)]
    candidates = []
    for record in recorder.records:
        out = record.output
        module = record.module
        passes = isinstance(module, _PASS) or (isinstance(module, nn.Sequential) and not len(module))
        if passes or recorder.calls.get(record.name) != 1 or not out.requires_grad:
            continue
        if out.dim() != 4 or out.shape[-2] * out.shape[-1] < 4:
            continue
        try:
            layout = resolve_layout(tuple(out.shape), size, model, record.module, None)
        except LayoutError:
            continue
        if layout.kind == "nchw":
            candidates.append(record)
    if not candidates:
        raise ValueError("found no channels-first layer the class scores depend on: pass target_layer")
    outputs = [r.output for r in candidates]
    score = (logits[:, cls] * (predicted == cls)).sum()
    region_grads = torch.autograd.grad(score, outputs, retain_graph=True, allow_unused=True)
    local = [True] * len(candidates)  # no probe pixel's gradient reaches beyond its own cells (yet)
    reached = [False] * len(candidates)
    for n, (row, col) in enumerate(pixels):
        one = logits[0, int(predicted[row, col]), row, col]
        grads = torch.autograd.grad(one, outputs, retain_graph=n < len(pixels) - 1, allow_unused=True)
        for i, grad in enumerate(grads):
            if grad is not None and bool(grad.any()):
                reached[i] = True
                local[i] = local[i] and _within_footprint(grad, (row, col), (int(h), int(w)))
    for i in reversed(range(len(candidates))):
        record, grad = candidates[i], region_grads[i]
        if grad is None or not bool(grad.any()) or not reached[i]:
            continue
        if local[i]:
            continue  # a per-position tail (1 x 1 convolutions, norms, activations): the logits again
        raw = CAM_METHODS["gradcam"](record.output.detach(), grad)[0]
        reference = F.interpolate(class_map[None, None], size=raw.shape[-2:], mode="area")[0, 0] if (
            class_map.shape[-2] >= raw.shape[-2] and class_map.shape[-1] >= raw.shape[-1]
        ) else F.interpolate(class_map[None, None], size=raw.shape[-2:], mode="bilinear")[0, 0]  # fmt: skip
        if _correlation(raw, reference) < TRIVIAL_CORRELATION:
            return record.name
    raise ValueError(
        "found no channels-first layer whose class map is not the output's own logit map: pass target_layer"
    )


def _within_footprint(gradient: Tensor, pixel: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether one output pixel's gradient at a layer ``(1, K, u, v)`` lies only on the 3 x 3 cells around
    that pixel's place on the layer's grid: what one or two bilinear resizes read, so a tail that never mixes
    positions otherwise (a ``3 x 3`` convolution and a resize read 4 x 4). Zero everywhere decides nothing."""
    support = gradient[0].abs().sum(dim=0) > 0
    if not bool(support.any()):
        return False
    u, v = support.shape
    window = torch.zeros_like(support)
    for axis, (p, n, m) in enumerate(((pixel[0], size[0], u), (pixel[1], size[1], v))):
        centre = round((p + 0.5) * m / n - 0.5)
        cells = slice(max(0, centre - 1), min(m, centre + 2))
        if axis == 0:
            rows = cells
        else:
            window[rows, cells] = True
    return not bool((support & ~window).any())


def _correlation(a: Tensor, b: Tensor) -> float:
    pair = torch.stack([a.double().flatten(), b.double().flatten()])
    if bool((pair.std(dim=1) == 0).any()):
        return 1.0  # a constant map shows nothing either
    return float(torch.corrcoef(pair)[0, 1])
