"""``explain``: every requested method from one capture, and the per-method classes built on it."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings as _warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from camlens.catalog import AUTO_METHOD, ROW
from camlens.costs import COUNTED_METHODS, Cost, method_cost
from camlens.device import capture_in_float32, mixed_precision
from camlens.engine import Capture, capture, check_input
from camlens.errors import ExplanationNote, check_names
from camlens.guard import eager_module, guard
from camlens.guided import RELU_KINDS
from camlens.heads import REGRESSION, SIGMOID
from camlens.layers import (
    AUTO,
    AutoLayer,
    LayerSpec,
    UninformativeLayerError,
    cached_default,
    closest_names,
    default_layer,
    resolve_layer,
)
from camlens.layouts import Layout, LayoutSpec
from camlens.methods.activation import EIGEN_METHODS
from camlens.methods.activation import eigen_smooth as eigen_smooth_map
from camlens.methods.context import MethodContext, MethodOptions
from camlens.methods.registry import CAM_METHODS, CONTEXT_METHODS, combined_head
from camlens.names import GUIDED_BACKPROP as GUIDED_BACKPROP
from camlens.names import GUIDED_GRADCAM as GUIDED_GRADCAM
from camlens.names import SEED_METHODS as SEED_METHODS
from camlens.postprocess import cam_to_image, rounding
from camlens.progress import current, reporting
from camlens.targets import SEGMENTATION_HINT, Targets, is_dense, multi_labels


def available_methods() -> list[str]:
    """Every method name ``explain`` accepts."""
    return [*CAM_METHODS, *CONTEXT_METHODS, GUIDED_BACKPROP, GUIDED_GRADCAM]


class MethodMaps(Mapping[str, Tensor]):
    """A result read as a mapping of method name -> map: ``result["gradcam"]``, ``list(result)``; the results of
    :func:`explain`, :func:`~camlens.explain_text`, :func:`~camlens.explain_similarity` and
    :func:`~camlens.explain_segmentation` share it."""

    maps: dict[str, Tensor]

    def __getitem__(self, name: str) -> Tensor:
        return self.maps[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.maps)

    def __len__(self) -> int:
        return len(self.maps)


@dataclass(frozen=True)
class Explanation(MethodMaps):
    """The maps of one ``explain`` call, by method name, with what produced them.

    ``result["gradcam"]`` is ``(B, H, W)`` in [0, 1]; ``result["guided_backprop"]`` and
    ``result["guided_gradcam"]`` are ``(B, C, H, W)``. ``raw[name]`` is the signed layer-resolution map
    ``sum_k w_k A_k`` before the ReLU, for each CAM method. For clips or volumes ``x`` ``(B, C, T, H, W)``
    the maps are ``(B, T, H, W)`` (trilinear upsampling, each clip normalised over all its frames) and
    ``raw[name]`` is at the 3-D layer's ``(t, u, v)``; guided maps have ``x``'s shape.

    ``layout`` says how the layer's output was read as ``(B, K, u, v)`` (``layout.describe()``:
    channels-first, channels-last, or tokens with the prefix tokens dropped and the grid).
    ``guided_rule`` counts the activations the guided rule was applied at, by kind (``{"relu": 17}``;
    any kind other than relu/relu6/hardtanh means the generalised rule ``f'(x) * max(grad, 0)``).
    ``warnings`` lists what is legal but suspicious (a map that is constant or zero everywhere for some
    images, named by index; a guided map with no activation routed); each is also issued as a Python
    ``UserWarning`` (:class:`~camlens.errors.ExplanationNote`). ``image_warnings[i]`` holds the ones that
    concern image ``i``, without indices. With several target layers the notes of every layer are kept (each
    names its layer); with ``aug_smooth`` they are those of the plain image's maps.

    ``head`` says what ``scores`` are when they are not the output's class logits: ``"sigmoid"``,
    ``"softmax"`` or ``"log_softmax"`` when the model's forward ends in that squashing (an ``nn.Sigmoid`` /
    ``nn.Softmax`` / ``nn.LogSoftmax`` module or a ``torch.sigmoid`` / ``softmax`` call): the maps, ``scores``
    and ``logits`` are those of the logits before it, which the papers explain (on a probability near 1 the
    gradient vanishes); ``"regression"`` for a ``(B,)`` or ``(B, 1)`` output explained with ``targets=None``:
    the score is the output itself. None: the class logits the model returned (or a callable target's score,
    which always sees the raw output). See :mod:`camlens.heads`.

    With multi-label targets (several labels per image: a list of lists of classes, a ``(B, L)`` integer
    or a ``(B, N)`` bool multi-hot tensor, see :func:`camlens.targets.multi_labels`) every field has one row
    per image and label, in image order, and ``image_index[r]`` is the image of ``x`` row ``r`` explains
    (``classes[r]`` its label); each row equals the call on that image alone with that class. ``overlay``,
    ``save`` and ``show`` take the images as before and repeat them per row. Otherwise ``image_index`` is None.
    """

    maps: dict[str, Tensor]
    raw: dict[str, Tensor]
    logits: Tensor | None
    scores: Tensor
    classes: Tensor | None
    target_layer: str | None
    counterfactual: bool = False
    compiled: bool = False  # a torch.compile wrapper: its eager ``_orig_mod`` (same parameters) was explained
    capture: Capture | None = field(default=None, repr=False, compare=False)
    layout: Layout | None = None
    guided_rule: dict[str, int] | None = None
    warnings: tuple[str, ...] = ()
    image_warnings: tuple[tuple[str, ...], ...] = ()  # per image: the warnings that concern it, without indices
    head: str | None = None
    image_index: Tensor | None = None  # multi-label targets: the image of ``x`` each row explains
    auto_method: str | None = None  # the method ``"auto"`` ran (``result["auto"]`` is its map)

    @property
    def probabilities(self) -> Tensor | None:
        """The model's class probabilities: ``sigmoid(logits)`` for a sigmoid head (multi-label), else
        ``softmax(logits)``; None without class logits or for a regression output (float32)."""
        if self.logits is None or self.head == REGRESSION:
            return None
        logits = self.logits.float()
        return logits.sigmoid() if self.head == SIGMOID else logits.softmax(dim=1)

    @property
    def guided_generalised(self) -> bool:
        """True when the guided map used the generalised rule at some non-ReLU activation."""
        return any(kind not in RELU_KINDS for kind in (self.guided_rule or {}))

    def overlay(self, images: Any, method: str | None = None, colormap: str = "jet", alpha: float = 0.5) -> list:
        """The explained images (paths, PIL images or arrays) with ``method``'s map over each, as uint8 arrays
        at the images' own sizes (see :func:`camlens.render.overlays`)."""
        from camlens.render import overlays

        return overlays(self, images, method, colormap, alpha)

    def save(self, folder: Any, images: Any, **options: Any) -> list:
        """Write every method's pictures for the explained images to ``folder``, annotated with the class,
        probability and method (see :func:`camlens.render.save_result` for ``options``)."""
        from camlens.render import save_result

        return save_result(self, folder, images, **options)

    def figure(self, images: Any, methods: Any = None, **options: Any) -> Any:
        """A matplotlib figure for a paper: images x methods, one colour bar, captions naming network, layer and
        class (see :func:`camlens.render.figure_grid` for ``options``: ``labels``, ``network``, ``kind`` ...)."""
        from camlens.render import figure_grid

        return figure_grid(self, images, methods, **options)


def check_methods(methods: Sequence[str] | str) -> list[str]:
    """The method names asked for, once each in their order, or a ValueError naming an unknown one and the
    closest known names (what :func:`explain` accepts: :func:`available_methods`)."""
    return check_names(methods, [*available_methods(), AUTO_METHOD])


def explain(
    model: nn.Module,
    x: Tensor,
    methods: Sequence[str] | str = SEED_METHODS,
    target_layer: LayerSpec | Sequence[LayerSpec] = None,
    targets: Targets = None,
    *,
    counterfactual: bool = False,
    layout: LayoutSpec = None,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
    precision: str = "float32",
    progress: Any = None,
    create_graph: bool = False,
    **options: Any,
) -> Explanation:
    """Explain ``model``'s scores on ``x`` with several methods from one forward pass.

    Args:
        model: any ``nn.Module``; left exactly as found (mode, flags, hooks, ``.grad``, weights).
        x: images ``(B, C, H, W)``, already preprocessed as the model expects; or clips / volumes
            ``(B, C, T, H, W)`` (a video network, a 3-D CNN), explained at a 3-D layer: every CAM weighting
            averages or sums over all its ``(t, u, v)`` positions, and methods defined on 2-D images only
            (fullgrad, sess, the vision-transformer methods) are refused (see ``docs/guide/video.md``).
        methods: names from :func:`available_methods`, or ``"auto"``: the method the ground-truth benchmark
            ranks best for the model's architecture family (:mod:`camlens.auto`; ``result.auto_method``).
        target_layer: a module or dotted name (``"layer4"``, ``"features.29"``); None picks the
            deepest spatial layer whose gradient at the spatial positions is not identically zero
            (see :mod:`camlens.layers`; chosen inside this call's own forward pass, then cached; its
            name is in the result).
        targets: None (predicted class), an int, B ints, several labels per image (a list of B lists of
            ints, a ``(B, L)`` integer or ``(B, N)`` bool tensor: one row of the result per image and label,
            ``result.image_index`` their images), or a callable ``output -> (B,)`` scores. A model ending in
            a sigmoid / softmax is explained on its logits, a ``(B,)`` / ``(B, 1)`` output with None on
            itself (``result.head``).
        counterfactual: negate the gradients (Grad-CAM paper, section 3.3): regions that argue
            *against* the class (the ``(A, g)`` methods).
        layout: how the layer's output is laid out: None (detected), ``"nchw"``, ``"nhwc"``,
            ``"tokens"`` or a callable ``output -> (B, K, u, v)`` (see :mod:`camlens.layouts`).

    Raises:
        ValueError: a layer whose map cannot show anything (1 x 1, or no gradient at its positions;
            the message names the automatic layer), or an undecidable layout (it says how to state it).
        eigen_smooth: replace each channel-weighted map ``sum_k w_k A_k`` by the first principal
            component of its terms ``w_k A_k`` (pytorch-grad-cam's option; ``(A, g)`` methods).
        aug_smooth: average every map over test-time augmentations (horizontal flip x scales 1, 1.1,
            0.9), each mapped back to the image; the explained classes are those of the plain image.
        **options: settings of the methods that have some: ``batch_size``, ``num_samples``,
            ``noise_std``, ``seed``, ``finer_alpha``, ``finer_classes`` (see
            :class:`camlens.methods.context.MethodOptions`).
        precision: ``"float32"`` (default), or ``"bfloat16"``/``"float16"`` to run the network under
            autocast (see :mod:`camlens.device`; check the maps with ``pick_precision`` first).
        progress: ``True`` shows a tqdm bar per perturbation method on stderr (its forward passes, the
            time left) after a one-line note of its cost; a callable ``(label, done, total)`` is called
            instead; None (default) follows an enclosing :func:`camlens.progress.reporting` block, else
            shows nothing (see :mod:`camlens.progress`; :func:`camlens.cost` tells the cost
            without running anything long).
        create_graph: return maps and raw maps that are differentiable with respect to the model's
            parameters and ``x`` (when it requires grad), for a loss on the map (attention-guided training,
            "right for the right reasons"): the forward is recorded whole and ``dS/dA`` is taken with
            ``create_graph=True``. Nothing is written to any ``.grad`` by the call; ``loss.backward()`` on a
            map does that. For the methods computed from ``(A, dS/dA)`` alone (:data:`DIFFERENTIABLE_METHODS`),
            at an explicit or automatic layer, in float32 (or the model's own dtype), without ``aug_smooth``,
            ``eigen_smooth`` or a list of layers; anything else is refused with a ``ValueError``.

    A list of target layers computes every map at each layer and fuses the image maps: LayerCAM by
    their maximum (Jiang et al. 2021, section 3.3), Refine-CAM by their product, the others by their mean
    (as pytorch-grad-cam); ``result.target_layer`` names them joined by ``+``.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> result = explain(model, torch.rand(2, 3, 64, 64), ["gradcam", "gradcam++"])
        >>> result.target_layer, result["gradcam"].shape
        ('layer4', torch.Size([2, 64, 64]))
    """
    names = check_methods(methods)
    if progress is not None:
        with reporting(progress):
            return explain(
                model, x, names, target_layer, targets, counterfactual=counterfactual, layout=layout,
                eigen_smooth=eigen_smooth, aug_smooth=aug_smooth, precision=precision, create_graph=create_graph,
                **options,
            )  # fmt: skip
    check_input(model, x, volumes=True)
    if x.dim() == 5:
        _check_volume_methods(names)
    if create_graph:
        _check_differentiable(names, aug_smooth, eigen_smooth, target_layer, precision)
    if AUTO_METHOD in names:
        from camlens.auto import auto_method

        with guard(model) as guarded:
            chosen = auto_method(guarded.model, x)
        inner = list(dict.fromkeys(chosen if n == AUTO_METHOD else n for n in names))
        found = explain(
            model, x, inner, target_layer, targets, counterfactual=counterfactual, layout=layout,
            eigen_smooth=eigen_smooth, aug_smooth=aug_smooth, precision=precision, create_graph=create_graph,
            **options,
        )  # fmt: skip
        maps = {n: found.maps[chosen if n == AUTO_METHOD else n] for n in names}
        raw = {**found.raw, **({AUTO_METHOD: found.raw[chosen]} if chosen in found.raw else {})}
        return dataclasses.replace(found, maps=maps, raw=raw, auto_method=chosen)
    labels = multi_labels(targets, int(x.shape[0]))
    if labels is not None:  # several labels per image: a row per image and label, each explained as one image
        image_index, classes = labels
        rows = explain(
            model, x[image_index.to(x.device)], names, target_layer, classes.to(x.device),
            counterfactual=counterfactual, layout=layout, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth,
            precision=precision, create_graph=create_graph, **options,
        )  # fmt: skip
        return dataclasses.replace(rows, image_index=image_index)
    method_options = _method_options(options)
    if aug_smooth or isinstance(target_layer, list | tuple):
        from camlens.methods import smoothing

        again = functools.partial(
            explain,
            model,
            methods=names,
            counterfactual=counterfactual,
            eigen_smooth=eigen_smooth,
            layout=layout,
            precision=precision,
            **options,
        )
        if aug_smooth:
            return smoothing.augmented(again, x, target_layer, targets)
        return smoothing.fuse_layers(again, x, list(target_layer), targets)  # type: ignore[arg-type]
    cam_names = [n for n in names if n in CAM_METHODS]
    specs = [CONTEXT_METHODS[n] for n in names if n in CONTEXT_METHODS]
    needs_layer = bool(cam_names) or GUIDED_GRADCAM in names or any(spec.uses_layer for spec in specs)
    # layer-free methods (fullgrad, legrad) still need the explained classes: the guided capture gives them
    needs_guided = GUIDED_BACKPROP in names or GUIDED_GRADCAM in names or (bool(specs) and not needs_layer)
    with guard(model) as guarded:
        if guarded.compiled and isinstance(target_layer, str):
            target_layer = target_layer.removeprefix("_orig_mod.")
        eager = guarded.model
        # a list of layers returned above (fuse_layers): one layer is left
        layer = _layer_for(eager, x, target_layer) if needs_layer else None  # type: ignore[arg-type]
        if isinstance(layer, AutoLayer) and (create_graph or any(spec.uses_layer for spec in specs)):
            layer = default_layer(eager, x)  # methods that re-run the layer's tail need its module up front
        head = combined_head(specs, method_options, targets)
        try:
            with mixed_precision(x.device, precision):
                cap = capture(
                    eager, x, targets, layer, guided=needs_guided, layout=layout, head=head, create_graph=create_graph
                )
        except UninformativeLayerError as error:
            raise UninformativeLayerError(f"{error}; {_better_layer(eager, x, layer)}") from None
        if precision != "float32":
            cap = capture_in_float32(cap)
        _check_native_layout(specs, cap)
        context = MethodContext(eager, x, targets, layer if isinstance(layer, tuple) else None, cap, method_options)
        extra = {spec.name: _run_method(spec, context) for spec in specs}
    with torch.enable_grad() if create_graph else contextlib.nullcontext():  # the maps join the graph
        result = _assemble(cap, names, x.shape[2:], counterfactual, extra, eigen_smooth, guarded.compiled)
    if target_layer is None and cap.layer_name is not None and is_dense(cap.output, int(x.shape[0])):
        note = (
            f"the automatic layer {cap.layer_name!r} is chosen for classifiers: on this dense (B, C, H, W) class "
            "map it is the segmentation head's logits (or next to them), whose map repeats the class map; "
            + SEGMENTATION_HINT
        )
        _warnings.warn(note, ExplanationNote, stacklevel=2)
        result = dataclasses.replace(
            result, warnings=(*result.warnings, note), image_warnings=tuple((*w, note) for w in result.image_warnings)
        )
    return result


DIFFERENTIABLE_METHODS = tuple(name for name in CAM_METHODS if name not in EIGEN_METHODS)
"""The methods ``explain(..., create_graph=True)`` returns differentiable maps of: the weightings of
``(A, dS/dA)`` (the eigen-based maps are left out: an eigenvector's sign and its derivative at a repeated
eigenvalue are not smooth)."""


def _check_differentiable(
    names: list[str], aug_smooth: bool, eigen_smooth: bool, target_layer: Any, precision: str
) -> None:
    """Refuse, with one line, what ``create_graph=True`` does not make differentiable."""
    others = [n for n in names if n not in DIFFERENTIABLE_METHODS]
    if others:
        raise ValueError(
            f"create_graph=True makes the maps of {', '.join(DIFFERENTIABLE_METHODS)} differentiable, not of "
            f"{', '.join(others)}"
        )
    refused = [
        what
        for what, on in (
            ("aug_smooth", aug_smooth),
            ("eigen_smooth", eigen_smooth),
            ("a list of target layers", isinstance(target_layer, list | tuple)),
            (f"precision={precision!r}", precision != "float32"),
        )
        if on
    ]
    if refused:
        raise ValueError(f"create_graph=True does not support {', '.join(refused)}")


def _run_method(spec: Any, context: MethodContext) -> Tensor:
    """Run one context method; a perturbation method's cost goes to the progress reporter first."""
    if spec.perturbation:
        reporter = current()
        activations = context.capture.activations
        if reporter is not None and activations is not None:
            found = method_cost(
                spec.name, int(activations.shape[1]), int(context.x.shape[0]), context.capture.layer_name,
                context.x.shape[-2:], context.options,
            )  # fmt: skip
            if found is not None:
                reporter.note(found.note)
    return spec.function(context)


def cost(model: Any, x: Any, methods: Sequence[str] | str, target_layer: Any = None, **options: Any) -> dict[str, Cost]:
    """What each perturbation method among ``methods`` will cost on ``x`` (one forward and backward pass to
    find the target layer's channels); the other methods are left out (they cost one pass together).

    ``options`` are those of :func:`explain` (``batch_size``, ``num_samples``, ``layout``, ...); the cost of
    one method is :func:`camlens.costs.method_cost`.

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> cost(model, torch.rand(1, 3, 64, 64), ["gradcam", "scorecam"])["scorecam"].note
        "scorecam: 512 forward passes (512 channels of 'layer4' x 1 image), 32 at a time"
    """
    names = check_methods(methods)
    layout = options.pop("layout", None)
    method_options = _method_options(options)
    wanted = [n for n in names if n in COUNTED_METHODS]
    if not wanted:
        return {}
    result = explain(model, x, ["gradcam"], target_layer, layout=layout, progress=False)
    assert result.capture is not None and result.capture.activations is not None
    channels = int(result.capture.activations.shape[1])
    out = {}
    for name in wanted:
        found = method_cost(name, channels, int(x.shape[0]), result.target_layer, x.shape[-2:], method_options)
        if found is not None:
            out[name] = found
    return out


def _check_native_layout(specs: list[Any], cap: Capture) -> None:
    """Methods that differentiate the layer's own output on the recorded graph (``finercam``,
    ``shapleycam``) need a channels-first layer: say so instead of mixing layouts. Perturbation methods
    registered with ``any_layout`` read the ``(B, K, u, v)`` view (Ablation-CAM writes back through
    :meth:`~camlens.layouts.Layout.to_native`)."""
    kind = None if cap.layout is None else cap.layout.kind
    if kind in (None, "nchw"):
        return
    native = [spec.name for spec in specs if (spec.perturbation or spec.head is not None) and not spec.any_layout]
    if native:
        raise ValueError(
            f"{', '.join(native)} need a channels-first (B, C, H, W) target layer; {cap.layer_name!r} is laid out "
            f"as {kind}: use a gradient method (gradcam, layercam, ...) here, or pick a convolutional layer"
        )


def _check_volume_methods(names: list[str]) -> None:
    """Refuse, in one line, the methods defined on 2-D images only for a clip or volume input."""
    for name in names:
        row = ROW.get(name)
        if row is None:
            continue
        why = row.planar or ("it reads a 2-D vision transformer's tokens" if row.vit_only else "")
        if why:
            raise ValueError(
                f"{name} is not defined on clips or volumes (B, C, T, H, W): {why}; use a CAM method "
                "(gradcam, gradcam++, layercam, ...), scorecam / ablationcam or guided_backprop"
            )


def _method_options(options: dict[str, Any]) -> MethodOptions:
    known = [f.name for f in dataclasses.fields(MethodOptions)]
    for key in options:
        if key not in known:
            raise TypeError(
                f"explain() got an unknown option {key!r}; known: {', '.join(known)} "
                f"(closest: {closest_names(key, known, 2)})"
            )
    return MethodOptions(**options)


def _layer_for(model: nn.Module, x: Tensor, target_layer: LayerSpec) -> tuple[str, nn.Module] | AutoLayer:
    if target_layer is None:
        return cached_default(model, x.shape[2:]) or AUTO
    return resolve_layer(model, target_layer)


def _better_layer(model: nn.Module, x: Tensor, layer: Any) -> str:
    """Name the automatic layer as the better choice (an extra pass, on this error path only)."""
    try:
        name, _ = default_layer(model, x)
    except ValueError:
        return "pick a layer before the global pooling whose output the score depends on"
    if isinstance(layer, tuple) and layer[0] == name:
        return "pick another layer before the global pooling"
    return f"pick an earlier spatial layer, e.g. the automatic choice {name!r} (target_layer=None)"


def _assemble(
    cap: Capture,
    names: list[str],
    size: Any,
    counterfactual: bool,
    extra: dict[str, Tensor] | None = None,
    eigen_smooth: bool = False,
    compiled: bool = False,
) -> Explanation:
    size = tuple(int(s) for s in size)  # (H, W), or (T, H, W) for a clip or volume
    maps: dict[str, Tensor] = {}
    raw: dict[str, Tensor] = {}
    wanted_cams = [n for n in names if n in CAM_METHODS]
    if GUIDED_GRADCAM in names and "gradcam" not in wanted_cams:
        wanted_cams.append("gradcam")
    if wanted_cams:
        assert cap.activations is not None and cap.gradients is not None
        gradients = -cap.gradients if counterfactual else cap.gradients
        for name in wanted_cams:
            smooth = eigen_smooth and name not in EIGEN_METHODS
            raw[name] = _cam_map(CAM_METHODS[name], cap.activations, gradients, smooth)
            maps[name] = cam_to_image(raw[name], size).to(cap.activations.dtype)
    for name, value in (extra or {}).items():
        raw[name] = value
        maps[name] = cam_to_image(value, size).to(value.dtype)
    notes, per_image = _map_notes(raw, cap.layer_name, int(cap.scores.shape[0]))
    shared: list[str] = []  # notes about the whole call
    if cap.layout is not None and cap.layout.assumed:
        shared.append(
            f"layer {cap.layer_name!r}: {cap.layout.describe()}; "
            "pass layout='nhwc' (--layout nhwc) if it is channels-last"
        )
    if GUIDED_BACKPROP in names or GUIDED_GRADCAM in names:
        assert cap.input_gradient is not None
        if not cap.guided_rule:
            shared.append(
                "guided backprop: the forward ran no activation the guided rule applies to, so the guided map "
                "is the plain input gradient"
            )
        maps[GUIDED_BACKPROP] = cap.input_gradient
        if GUIDED_GRADCAM in names:
            maps[GUIDED_GRADCAM] = cap.input_gradient * maps["gradcam"][:, None]
    ordered = {n: maps[n] for n in names}
    notes += shared
    for note in notes:
        _warnings.warn(note, ExplanationNote, stacklevel=3)
    return Explanation(
        maps=ordered,
        raw=raw,
        logits=cap.logits,
        scores=cap.scores,
        classes=cap.classes,
        target_layer=cap.layer_name,
        counterfactual=counterfactual,
        compiled=compiled,
        capture=cap,
        layout=cap.layout,
        guided_rule=cap.guided_rule,
        warnings=tuple(notes),
        image_warnings=tuple(tuple(own + shared) for own in per_image),
        head=cap.head,
    )


def _cam_map(function: Any, activations: Tensor, gradients: Tensor, smooth: bool) -> Tensor:
    """One ``(A, g)`` method's signed map (``eigen_smooth``: of its terms' first principal component).

    A clip's or volume's layer ``(B, K, t, u, v)`` reaches the ``(B, K, u, v)`` function with its positions
    folded as ``(B, K, t u, v)`` and the map unfolded to ``(B, t, u, v)``. Every built-in weighting either
    reduces over all the positions (Grad-CAM's ``w_k`` is the mean of ``g_k`` over ``t, u, v``; the principal
    components of Eigen-CAM are over all of them) or works position by position, so this is the 3-D
    definition exactly; a run-time ``register_cam`` function sees the same folded layer.
    """
    positions = activations.shape[2:]
    if len(positions) == 3:
        t, u, v = positions
        a, g = (m.reshape(*m.shape[:2], t * u, v) for m in (activations, gradients))
        return _cam_map(function, a, g, smooth).reshape(-1, t, u, v)
    return eigen_smooth_map(function, activations, gradients) if smooth else function(activations, gradients)


def _map_notes(raw: dict[str, Tensor], layer: str | None, batch: int) -> tuple[list[str], list[list[str]]]:
    """Notes for each CAM method whose map shows nothing for some image: its signed map is constant over the
    positions (within the rounding that :func:`~camlens.postprocess.normalize_per_image` shows as flat), or
    positive at none of them (the displayed ``ReLU(raw)`` is then zero everywhere). Returns the notes that
    name the images, and each image's own notes."""
    notes: list[str] = []
    per_image: list[list[str]] = [[] for _ in range(batch)]
    for name, m in raw.items():
        flat = m.flatten(1)
        top = flat.amax(dim=1)
        constant = (top - flat.amin(dim=1)) <= rounding(flat.abs().amax(dim=1))
        found = [
            (constant, "is constant", "it shows nothing"),
            (
                (top <= 0) & ~constant,
                "is zero everywhere",
                "its signed map (raw) is positive at no position, so it shows nothing; try another layer or class "
                "(on a transformer's tokens the sign of channel-weighted evidence is arbitrary: legrad or fullgrad "
                "point at the evidence more reliably)",
            ),
        ]
        for which, what, why in found:
            index = which.nonzero().flatten().tolist()
            if index:
                notes.append(f"{name}: the map at layer {layer!r} {what} for image(s) {_few(index)}: {why}")
                for i in index:
                    per_image[i].append(f"{name}: the map at layer {layer!r} {what} for this image: {why}")
    return notes, per_image


def _few(index: list[int], shown: int = 10) -> str:
    """``[0, 3, 5]``, or the first ``shown`` indices and how many more."""
    more = f" and {len(index) - shown} more" if len(index) > shown else ""
    return f"{index[:shown]}{more}"


class _Explainer:
    """One method as an object: ``method(model, target_layer)(x, targets) -> map``."""

    method: ClassVar[str]
    uses_layer: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        *,
        counterfactual: bool = False,
        layout: LayoutSpec = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        self.model = model
        self.counterfactual = counterfactual
        self.layout = layout
        self._layer: tuple[str, nn.Module] | None = None
        if target_layer is not None:
            self._layer = resolve_layer(eager_module(model)[0], target_layer)

    @property
    def target_layer_name(self) -> str | None:
        """The explained layer's dotted name (known once resolved: at construction or first call)."""
        return None if self._layer is None else self._layer[0]

    def explain(self, x: Tensor, targets: Targets = None) -> Explanation:
        """The full result: the map, the raw signed layer map, logits, classes and layer name."""
        layer = self._layer[1] if self._layer else None
        result = explain(
            self.model, x, [self.method], layer, targets, counterfactual=self.counterfactual, layout=self.layout
        )
        if self._layer is None and result.target_layer is not None:
            self._layer = resolve_layer(eager_module(self.model)[0], result.target_layer)  # the automatic choice
        return result

    def __call__(self, x: Tensor, targets: Targets = None) -> Tensor:
        return self.explain(x, targets)[self.method]

    def __repr__(self) -> str:
        layer = f", target_layer={self.target_layer_name!r}" if self.uses_layer else ""
        return f"{type(self).__name__}({type(self.model).__name__}{layer})"


class GradCAM(_Explainer):
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k mean_ij(dS/dA_kij) A_k)``, ``(B, H, W)`` in [0, 1].

    Example:
        >>> import torch, torchvision
        >>> cam = GradCAM(torchvision.models.resnet18(num_classes=10).eval())
        >>> cam(torch.rand(1, 3, 64, 64), targets=3).shape
        torch.Size([1, 64, 64])
    """

    method = "gradcam"


class GradCAMPlusPlus(_Explainer):
    """Grad-CAM++ (Chattopadhyay et al. 2018, Eq. 19, safe division), ``(B, H, W)`` in [0, 1]."""

    method = "gradcam++"


class GuidedBackprop(_Explainer):
    """Guided backpropagation (Springenberg et al. 2015) at every activation the forward runs, ``(B, C, H, W)``.

    ReLUs follow Springenberg's rule; other pointwise activations ``f`` the generalised rule
    ``f'(x) * max(grad_out, 0)`` (see :mod:`camlens.guided`).
    """

    method = GUIDED_BACKPROP
    uses_layer = False

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)


class GuidedGradCAM(_Explainer):
    """Guided Grad-CAM (Selvaraju et al. 2017, section 3.2): guided backprop times the Grad-CAM map."""

    method = GUIDED_GRADCAM
