"""The engine: one forward pass, the gradients the methods need, and the model left as found.

``capture`` runs the model once and returns an immutable :class:`Capture` of the logits, the target
layer's activations ``A`` and gradients ``g = dS/dA``, and (on request) the guided gradient of ``S``
with respect to the input.

* Without guided backprop, everything before the target layer runs without autograd; the layer's
  forward hook switches gradient recording on and hands the rest of the network a copy of a fresh leaf
  ``A``. Only the head is recorded, and ``torch.autograd.grad`` differentiates ``S`` to ``A`` alone:
  Grad-CAM costs about one inference.
* With guided backprop the whole forward is recorded through :class:`GuidedReLUMode`; one
  ``autograd.grad`` with the true ReLU derivative gives ``g``, a second with the guided rule gives the
  input gradient: four methods, one forward.

The target layer may output a channels-first map, a channels-last map or tokens; it is read as
``(B, K, u, v)`` after the pass (:mod:`camlens.layouts`), the gradients identically. A clip or volume input
``(B, C, T, H, W)`` is explained at a 3-D layer, read as ``(B, K, t, u, v)``. With ``layer=AUTO``
the layer is chosen inside the same forward (:class:`camlens.candidates.CandidateRecorder`), so the model
runs once per call either way.

The layer's own output is captured and a copy goes downstream, so an in-place op after the layer
(densenet's ``F.relu(..., inplace=True)`` after ``norm5``) cannot overwrite it. Hooks live for one call
and are removed in ``finally``; no ``.backward()`` runs, so no parameter's ``.grad`` changes; no module
is replaced, no flag is touched, and the input tensor is never modified.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from camlens.candidates import AutoLayer, CandidateRecorder, UninformativeLayerError, remember_default
from camlens.guard import guarded_call
from camlens.guided import GuidedMode, GuidedSwitch
from camlens.heads import HeadRecorder
from camlens.layouts import Layout, LayoutSpec, TokenGrids, resolve_layout
from camlens.targets import Targets, TargetScores, logits_of, target_scores


@dataclass(frozen=True)
class Capture:
    """What one forward/backward of the engine produced (all tensors detached; with ``create_graph`` the
    activations and gradients stay in the autograd graph)."""

    output: Any  # the model's raw output
    logits: Tensor | None  # (B, N) when there are classification logits
    scores: Tensor  # (B,) the explained pre-softmax scores
    classes: Tensor | None  # (B,) the explained classes (None for a callable target)
    layer_name: str | None
    activations: Tensor | None  # (B, K, u, v); (B, K, t, u, v) for a clip or volume
    gradients: Tensor | None  # (B, K, u, v) dS/dA (as the activations)
    input_gradient: Tensor | None  # (B, C, H, W) guided dS/dx (the input's shape)
    layout: Layout | None = None  # how the layer's output was read as (B, K, u, v)
    guided_rule: dict[str, int] | None = None  # activations routed by the guided rule, by kind
    extras: dict[str, Tensor] = field(default_factory=dict)  # what the ``head`` callable computed
    # what ``scores`` are when not the output's class logits: "sigmoid" / "softmax" / "log_softmax" (the logits
    # before that squashing, which ``logits`` then holds) or "regression" (a (B,) / (B, 1) output as it is)
    head: str | None = None


# head(output, activations, picked targets) -> named tensors, run on the recorded graph (retain_graph=True)
HeadFunction = Callable[[Any, Tensor, TargetScores], dict[str, Tensor]]


class _LayerHook:
    """Forward hook: keep the layer's own output and pass a copy downstream."""

    def __init__(
        self, name: str, start_recording: bool, heads: HeadRecorder | None = None, keep_graph: bool = False
    ) -> None:
        self.name = name
        self.start_recording = start_recording
        self.keep_graph = keep_graph  # create_graph: the output stays in the graph of the parameters and input
        self.heads = heads  # watched from here on: only the part after the layer can end in the head
        self.activations: Tensor | None = None
        self.calls = 0
        self.bad_output: str | None = None

    def __call__(self, _module: nn.Module, _inputs: Any, output: Any) -> Any:
        self.calls += 1
        rest: tuple[Any, ...] | None = None
        if _tokens_and_shape(output):  # a video transformer's block: (tokens, (t, h, w))
            output, rest = output[0], tuple(output[1:])
        if not isinstance(output, Tensor) or output.dim() not in (3, 4, 5):
            self.bad_output = (
                f"{type(output).__name__} of shape {tuple(output.shape)}"
                if isinstance(output, Tensor)
                else type(output).__name__
            )
            return None
        if self.heads is not None:
            self.heads.start()
        if self.keep_graph:
            if not output.requires_grad:  # nothing before the layer has a gradient: the map depends on the head only
                output = output.detach().requires_grad_(True)
        elif self.start_recording:
            torch.set_grad_enabled(True)  # restored when the caller's no_grad block exits
            output = output.detach().requires_grad_(True)
        self.activations = output
        return output.clone() if rest is None else (output.clone(), *rest)


def _tokens_and_shape(output: Any) -> bool:
    """Whether ``output`` is a plain tuple ``(tokens, (t, h, w))``: a tensor and, after it, no tensors."""
    return (
        type(output) is tuple
        and len(output) >= 2
        and isinstance(output[0], Tensor)
        and not any(isinstance(v, Tensor) for v in output[1:])
    )


def check_input(model: Any, x: Any, *, volumes: bool = False) -> None:
    """A one-line error unless ``model`` is a module and ``x`` a floating-point batch of images ``(B, C, H, W)``
    (or, with ``volumes``, of clips or volumes ``(B, C, T, H, W)``)."""
    what = "images (B, C, H, W)" + (" or clips / volumes (B, C, T, H, W)" if volumes else "")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor of {what}, not {type(x).__name__}")
    if x.dim() not in ((4, 5) if volumes else (4,)):
        raise ValueError(f"x must be a batch of {what}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, not {x.dtype}")


@guarded_call
def capture(
    model: nn.Module,
    x: Tensor,
    targets: Targets = None,
    layer: tuple[str, nn.Module] | AutoLayer | None = None,
    *,
    guided: bool = False,
    layout: LayoutSpec = None,
    head: HeadFunction | None = None,
    create_graph: bool = False,
) -> Capture:
    """Run ``model`` once on ``x`` and collect what the requested methods need.

    Args:
        model: any ``nn.Module``; left exactly as found (see :mod:`camlens.guard`).
        x: input batch ``(B, C, H, W)``, or clips / volumes ``(B, C, T, H, W)`` (explained at a 3-D layer);
            not modified.
        targets: see :mod:`camlens.targets`.
        layer: ``(name, module)`` of the target layer, ``camlens.layers.AUTO`` to choose it in this
            forward pass, or None when no CAM is wanted.
        guided: also compute the guided-backprop gradient with respect to ``x``.
        layout: how the layer's output is laid out (see :func:`camlens.layouts.resolve_layout`).
        head: extra derivatives on the same recorded graph, before it is freed: called as
            ``head(output, A, picked)`` with ``A`` the recorded layer output and ``picked`` the
            :class:`~camlens.targets.TargetScores`; it must differentiate with
            ``retain_graph=True`` and return detached tensors (finer-CAM's other classes, Shapley-CAM's
            Hessian-vector product). They land in ``Capture.extras``. It needs an explicit layer (not
            ``AUTO``), and sees the layer output in its own layout (``Capture.layout`` converts it). A head
            whose ``second_order`` attribute is true differentiates twice: the forward then runs on the math
            attention kernel (``sdpa_kernel(MATH)``; CPU flash attention has no second derivative). A head may
            return the key ``"layer_gradients"`` (a tensor shaped as ``A``): it is then ``Capture.gradients``, and
            the engine does not differentiate to the layer itself (a head that obtains what its methods need of
            the gradient more cheaply than the full backward).
        create_graph: record the whole forward and differentiate ``S`` with ``create_graph=True``:
            ``activations`` and ``gradients`` stay in the autograd graph of the model's parameters and of
            ``x`` (not detached), so maps computed from them can be differentiated again (a CAM loss). Needs an
            explicit layer, no ``guided`` and no ``head``. Nothing is written to any ``.grad``.
    """
    check_input(model, x, volumes=True)
    if create_graph and (guided or head is not None or not isinstance(layer, tuple)):
        raise ValueError("create_graph needs an explicit target layer, and no guided gradient or head")
    batch = x.shape[0]
    size = tuple(int(s) for s in x.shape[2:])  # (H, W), or (T, H, W) for a clip or volume
    auto = isinstance(layer, AutoLayer)
    with torch.inference_mode(False):
        x_in = x if create_graph else x.detach()  # create_graph: the maps depend on x through the graph
        if x_in.is_inference():
            x_in = x_in.clone()
        if guided or auto:
            x_in = x_in.requires_grad_(True)  # record the whole forward
        switch = GuidedSwitch()
        mode = GuidedMode(switch) if guided else None
        hook = handle = recorder = None
        heads = HeadRecorder()
        grids = TokenGrids(model) if len(size) == 3 else None  # a clip's tokens: the grid the model hands on
        if auto:
            recorder = CandidateRecorder(model, batch, token_grids=None if grids is None else grids.grids)
        elif isinstance(layer, tuple):
            hook = _LayerHook(layer[0], start_recording=not guided, heads=heads, keep_graph=create_graph)
            handle = layer[1].register_forward_hook(hook)
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(torch.enable_grad() if guided or auto or create_graph else torch.no_grad())
                if grids is not None:
                    stack.enter_context(grids)
                if recorder is not None:
                    stack.enter_context(recorder)
                if mode is not None:
                    stack.enter_context(mode)
                stack.callback(heads.stop)  # innermost: it sees each call's final result
                if getattr(head, "second_order", False):
                    # CPU flash attention has no second derivative: the math kernel (same values) has
                    from torch.nn.attention import SDPBackend, sdpa_kernel

                    stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
                if guided or auto or hook is None:
                    heads.start()
                output = model(x_in)
        finally:
            heads.stop()
            if handle is not None:
                handle.remove()

        if hook is not None:
            _check_hook(hook)
        layer_name = activations = gradients = found_layout = hook_layout = None
        if hook is not None and hook.activations is not None:
            assert isinstance(layer, tuple)
            hook_layout = resolve_layout(
                tuple(hook.activations.shape), size, model, layer[1], layout, None if grids is None else grids.grids
            )
        with torch.enable_grad():
            picked = target_scores(output, targets, batch, heads.found(logits_of(output), batch))
            _check_connected(picked.scores, hook)
            extras = {}
            supplied = None  # the layer's gradient as the head obtained it
            if head is not None and hook_layout is not None:
                assert hook is not None and hook.activations is not None  # hook_layout comes from them
                extras = dict(head(output, hook.activations, picked))
                supplied = extras.pop("layer_gradients", None)
            if recorder is not None:
                choice = recorder.choose(picked.scores.sum(), size, layout, retain_graph=guided)
                if choice.remember:
                    remember_default(model, size, choice.name)
                layer_name, found_layout = choice.name, choice.layout
                activations, gradients = choice.activations, choice.gradients
            gradients, input_gradient = _differentiate(
                picked.scores, hook if supplied is None else None, x_in if guided else None, switch,
                gradients if supplied is None else supplied, create_graph,
            )  # fmt: skip
        if hook is not None and hook.activations is not None:
            assert gradients is not None
            layer_name, activations = hook.name, hook.activations if create_graph else hook.activations.detach()
            found_layout = hook_layout
        if found_layout is not None:
            assert activations is not None and gradients is not None
            activations, gradients = _to_spatial(found_layout, activations, gradients, layer_name, len(size))

    return Capture(
        output=_detach(output),
        logits=None if picked.logits is None else picked.logits.detach(),
        scores=picked.scores.detach(),
        classes=picked.classes,
        layer_name=layer_name,
        activations=activations,
        gradients=gradients,
        input_gradient=input_gradient,
        layout=found_layout,
        guided_rule=None if mode is None else dict(mode.routed),
        extras=extras,
        head=picked.head,
    )


def _to_spatial(
    layout: Layout, activations: Tensor, gradients: Tensor, name: str | None, spatial_dims: int = 2
) -> tuple[Tensor, Tensor]:
    a, g = layout.to_spatial(activations), layout.to_spatial(gradients)
    # A gradient that is zero everywhere (a dead target, dead units) gives a zero map, which explain reports
    # as a warning; zero at the positions but not at the prefix tokens is the layer's structure: an error.
    if a.dim() != spatial_dims + 2 or a.shape != g.shape:
        wanted = "(B, K, u, v)" if spatial_dims == 2 else "(B, K, t, u, v)"
        raise ValueError(f"layout for layer {name!r} must give {wanted} maps, got shape {tuple(a.shape)}")
    if a.shape[2:].numel() < 2:
        raise UninformativeLayerError(
            f"the target layer {name!r} gives a {' x '.join(str(s) for s in a.shape[2:])} map (it comes after the "
            "global pooling): every CAM there is constant"
        )
    if not bool(g.any()) and bool(gradients.any()):
        raise UninformativeLayerError(
            f"the target score gets no gradient at the spatial positions of layer {name!r} "
            f"({layout.describe()}): its map would be empty"
            + (
                " (in a class-token ViT only the class token reaches the head after the last block's attention)"
                if layout.kind == "tokens" and layout.prefix_tokens
                else ""
            )
        )
    return a, g


def _check_hook(hook: _LayerHook) -> None:
    if hook.calls == 0:
        raise ValueError(f"the target layer {hook.name!r} did not run in the forward pass: pick a layer the model uses")
    if hook.bad_output is not None:
        raise ValueError(
            f"the target layer {hook.name!r} outputs a {hook.bad_output}; CAM methods need a spatial map "
            "(B, C, H, W) / (B, H, W, C) (5-D for a clip or volume) or tokens (B, N, C): pick a layer before the "
            "global pooling"
        )
    if hook.calls > 1:
        raise ValueError(
            f"the target layer {hook.name!r} ran {hook.calls} times in one forward pass (a shared module): "
            "pick a layer that runs once"
        )


def _check_connected(scores: Tensor, hook: _LayerHook | None) -> None:
    if scores.grad_fn is None:
        where = f"the target layer {hook.name!r}" if hook is not None else "the input"
        raise ValueError(
            f"no gradient reaches {where}: the target score is not connected to it "
            "(does the model or the target detach its output, or run under torch.no_grad inside forward?)"
        )


def _differentiate(
    scores: Tensor,
    hook: _LayerHook | None,
    x_in: Tensor | None,
    switch: GuidedSwitch,
    gradients: Tensor | None = None,
    create_graph: bool = False,
) -> tuple[Tensor | None, Tensor | None]:
    total = scores.sum()
    input_gradient = None
    if hook is not None and hook.activations is not None:
        (gradients,) = torch.autograd.grad(
            total, [hook.activations], retain_graph=x_in is not None or create_graph, create_graph=create_graph,
            allow_unused=True,
        )  # fmt: skip
        if gradients is None:
            raise ValueError(
                f"no gradient reaches the target layer {hook.name!r}: the target score does not depend on its "
                "output (is the layer after the classifier, or on a branch the score does not use?)"
            )
    if x_in is not None:
        switch.guided = True
        (input_gradient,) = torch.autograd.grad(total, [x_in], allow_unused=True)
        if input_gradient is None:
            raise ValueError("no gradient reaches the input: the target score does not depend on it")
    return gradients, input_gradient


def _detach(output: Any) -> Any:
    if isinstance(output, Tensor):
        return output.detach()
    if isinstance(output, tuple) and hasattr(output, "_fields"):
        return type(output)(*(_detach(v) for v in output))
    if isinstance(output, tuple | list):
        return type(output)(_detach(v) for v in output)
    if isinstance(output, dict):
        return {k: _detach(v) for k, v in output.items()}
    return output
