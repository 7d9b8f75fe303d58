"""The candidate target layers of one forward pass, and the automatic choice among them.

The rule itself is described in :mod:`camlens.layers`. This module is what the engine
(:mod:`camlens.engine`) needs to make the choice inside its own forward pass; it imports no engine.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from camlens.layouts import Layout, LayoutError, LayoutSpec, resolve_layout
from camlens.postprocess import rounding

_PASSTHROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Flatten)
_default_cache: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], str]] = weakref.WeakKeyDictionary()


class UninformativeLayerError(ValueError):
    """The target layer's map cannot show anything (1 x 1, or no gradient reaches its positions)."""


class AutoLayer:
    """The automatic layer choice, made inside the explanation's own forward pass."""

    def __repr__(self) -> str:
        return "AUTO"


AUTO = AutoLayer()


def _is_pool(module: nn.Module) -> bool:
    return "Pool" in type(module).__name__


@dataclass
class _Record:
    name: str
    module: nn.Module
    output: Tensor
    pooled: bool
    projection: bool
    hint: nn.Module  # the module that made the tensor (a container passes its child's output on)


@dataclass(frozen=True)
class AutoChoice:
    """The layer the automatic rule chose, with its raw output and gradient."""

    name: str
    module: nn.Module
    activations: Tensor  # the layer's own output, as recorded
    gradients: Tensor  # dS/d(output), same shape
    layout: Layout
    remember: bool = True  # False for a fallback that depends on this call's target


class CandidateRecorder:
    """Forward hooks on every module that record each 3-D/4-D output as a candidate target layer.

    Each hook keeps the module's own output and hands a copy downstream, so in-place ops later in the
    network (densenet's ``F.relu(..., inplace=True)`` after ``norm5``) cannot change a candidate. Use as
    a context manager: the hooks are removed on exit.
    """

    def __init__(
        self, model: nn.Module, batch: int, token_grids: Mapping[int, tuple[int, int, int] | None] | None = None
    ) -> None:
        self.model = model
        self.batch = batch
        self.token_grids = token_grids  # a clip's token grids, filled during the forward (layouts.TokenGrids)
        self.names = {module: name for name, module in model.named_modules() if name}
        self.records: list[_Record] = []
        self.calls: dict[str, int] = {}
        self._handed: dict[int, tuple[Tensor, _Record]] = {}  # id(copy handed downstream) -> (copy, record)
        self._handles: list[Any] = []

    def __enter__(self) -> CandidateRecorder:
        try:
            for module in self.names:
                self._handles.append(module.register_forward_hook(self._hook))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _source(self, t: Any) -> _Record | None:
        found = self._handed.get(id(t)) if isinstance(t, Tensor) else None
        return found[1] if found is not None and found[0] is t else None

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        name = self.names[module]
        self.calls[name] = self.calls.get(name, 0) + 1
        if not isinstance(output, Tensor):
            return None
        source = self._source(output)
        pooled = _is_pool(module) or (source is not None and source.pooled)
        if output.dim() not in (3, 4, 5) or output.shape[0] != self.batch or not output.is_floating_point():
            return None
        projection = isinstance(module, nn.Linear) and any(self._source(i) is not None for i in inputs)
        hint = source.hint if source is not None else module
        record = _Record(name, module, output, pooled, projection, hint)
        self.records.append(record)
        handed = output.clone()
        self._handed[id(handed)] = (handed, record)
        return handed

    def candidates(self, size: tuple[int, ...], spec: LayoutSpec = None) -> list[tuple[_Record, Layout]]:
        """The recorded outputs the automatic rule may choose, in the order their modules completed, each with
        its layout: not pooled, not a pass-through, run once, recorded by autograd, with a spatial layout of at
        least 2 positions (the rule's conditions that need no gradient)."""
        candidates: list[tuple[_Record, Layout]] = []
        for record in self.records:
            if (
                record.pooled
                or isinstance(record.module, _PASSTHROUGH)
                or self.calls[record.name] != 1
                or not record.output.requires_grad
            ):
                continue
            try:
                layout = resolve_layout(
                    tuple(record.output.shape), size, self.model, record.hint, spec, self.token_grids
                )
            except LayoutError:
                continue
            if layout.kind != "custom" and math.prod(layout.grid) < 2:
                continue
            try:
                a = layout.to_spatial(record.output.detach())
            except RuntimeError:
                continue
            if a.dim() != len(size) + 2 or a.shape[2:].numel() < 2:
                continue
            candidates.append((record, layout))
        return candidates

    def choose(
        self, total: Tensor, size: tuple[int, ...], spec: LayoutSpec = None, *, retain_graph: bool = False
    ) -> AutoChoice:
        """Differentiate ``total`` at every candidate once and pick the automatic layer (see the module doc)."""
        candidates = self.candidates(size, spec)
        fallback: AutoChoice | None = None
        if candidates:
            grads = torch.autograd.grad(
                total, [r.output for r, _ in candidates], retain_graph=retain_graph, allow_unused=True
            )
            for (record, layout), grad in zip(reversed(candidates), reversed(grads), strict=True):
                if grad is None or record.projection:
                    continue
                try:
                    a, g = layout.to_spatial(record.output.detach()), layout.to_spatial(grad)
                except RuntimeError:
                    continue
                choice = AutoChoice(record.name, record.module, record.output.detach(), grad, layout)
                fallback = fallback or choice
                if not bool(g.any()) or not _varies(a):
                    continue
                return choice
        if fallback is not None:
            # No candidate is informative for this call (e.g. a class whose weights are all zero, a dead layer):
            # the deepest spatial one is explained as it is (its flat map is reported by explain) and the
            # choice, which depends on this call's target, is not remembered.
            f = fallback
            return AutoChoice(f.name, f.module, f.activations, f.gradients, f.layout, remember=False)
        raise ValueError(
            "found no layer with a spatial output (a map or tokens) that the target score depends on: "
            "pass target_layer (and layout= if its output is neither (B, C, H, W), (B, H, W, C) nor (B, N, C))"
        )


def _varies(a: Tensor) -> bool:
    """Whether some channel of ``(B, K, u, v)`` activations varies over the positions beyond rounding: by more
    than 64 ulps of the image's largest activation (the flatness rule of
    :func:`~camlens.postprocess.normalize_per_image`). A stage whose tokens all carry the same vector up to
    rounding (LeViT's later stages at random init) shows nothing."""
    flat = a.flatten(2)
    span = flat.amax(dim=2) - flat.amin(dim=2)
    return bool((span > rounding(a.abs().flatten(1).amax(dim=1, keepdim=True))).any())


def cached_default(model: nn.Module, size: tuple[int, ...]) -> tuple[str, nn.Module] | None:
    """The automatic layer chosen before for this model and input size, if any."""
    name = _default_cache.get(model, {}).get(tuple(int(s) for s in size))
    if name is None:
        return None
    modules = dict(model.named_modules())
    return (name, modules[name]) if name in modules else None


def remember_default(model: nn.Module, size: tuple[int, ...], name: str) -> None:
    """Keep the automatic choice for later calls with the same input size."""
    _default_cache.setdefault(model, {})[tuple(int(s) for s in size)] = name
