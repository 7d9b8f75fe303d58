"""The two registries ``explain`` reads, built from :mod:`camlens.catalog`, and the run-time ``register_*``.

``CAM_METHODS`` maps a name to its pure ``(A, g) -> map`` function, ``CONTEXT_METHODS`` to a
:class:`~camlens.methods.context.MethodSpec`. Their built-in keys are the catalog's rows, in its order; a
row's function (its module) is imported on the first look-up of that name, so ``"scorecam" in
CAM_METHODS`` or listing the names imports no method module. Methods registered at run time come after
the built-in ones.

Example:
    >>> import torch
    >>> @register_cam("mean_activation")
    ... def mean_activation(activations, gradients):
    ...     return activations.mean(dim=1)
    >>> list(CAM_METHODS)[-1], CAM_METHODS["mean_activation"] is mean_activation
    ('mean_activation', True)
    >>> del CAM_METHODS["mean_activation"]  # run-time registrations can be removed; built-in ones cannot
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import Tensor

from camlens.catalog import ROWS, MethodRow, resolve

CamFunction = Callable[[Tensor, Tensor], Tensor]
ContextFunction = Callable[[Any], Tensor]  # (camlens.methods.context.MethodContext) -> map
HeadFactory = Callable[[Any, Any], Any]  # (MethodOptions, Targets) -> camlens.engine.HeadFunction
V = TypeVar("V")


@dataclass(frozen=True)
class MethodSpec:
    """A context method as the engine runs it: what it computes and what it needs (the fields of
    :class:`camlens.catalog.MethodRow` of the same names)."""

    name: str
    function: ContextFunction
    uses_layer: bool = True
    head: HeadFactory | None = None
    perturbation: bool = False  # runs the model again (cost grows with channels or samples)
    any_layout: bool = False  # works on channels-last and token layers too (else: channels-first only)


class Registry(MutableMapping[str, V]):
    """Name -> value: the catalog's rows of one kind (built on first look-up), then run-time additions."""

    def __init__(self, kind: str, build: Callable[[MethodRow], V]) -> None:
        self._rows = {row.name: row for row in ROWS if row.kind == kind}
        self._build = build
        self._built: dict[str, V] = {}
        self._added: dict[str, V] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> V:
        if name in self._added:
            return self._added[name]
        if name not in self._built:
            row = self._rows[name]  # KeyError for a name that is not here
            with self._lock:
                if name not in self._built:
                    self._built[name] = self._build(row)
        return self._built[name]

    def __contains__(self, name: object) -> bool:
        return name in self._rows or name in self._added

    def __iter__(self) -> Iterator[str]:
        yield from self._rows
        yield from self._added

    def __len__(self) -> int:
        return len(self._rows) + len(self._added)

    def __setitem__(self, name: str, value: V) -> None:
        if name in self._rows:
            raise ValueError(f"{name!r} is a built-in method (a row of camlens.catalog); pick another name")
        self._added[name] = value

    def __delitem__(self, name: str) -> None:
        if name in self._rows:
            raise ValueError(f"{name!r} is a built-in method (a row of camlens.catalog) and cannot be removed")
        del self._added[name]

    def __repr__(self) -> str:
        return f"Registry({list(self)})"


def combined_head(specs: list[MethodSpec], options: Any, targets: Any) -> Any:
    """One head callable (:data:`camlens.engine.HeadFunction`) running every spec's head on the recorded graph,
    None when none has one; ``options`` and ``targets`` are the call's ``MethodOptions`` and targets."""
    heads = [spec.head(options, targets) for spec in specs if spec.head is not None]
    if not heads:
        return None

    def run(output: Any, activations: Tensor, picked: Any) -> dict[str, Tensor]:
        extras: dict[str, Tensor] = {}
        for one in heads:
            extras.update(one(output, activations, picked))
        return extras

    # a head that differentiates twice needs a forward whose operations all have second derivatives
    run.second_order = any(getattr(one, "second_order", False) for one in heads)  # type: ignore[attr-defined]
    return run


def _spec(row: MethodRow) -> MethodSpec:
    head = resolve(row.head) if row.head else None
    return MethodSpec(row.name, resolve(row.entry), row.uses_layer, head, row.perturbation, row.any_layout)


CAM_METHODS: Registry[CamFunction] = Registry("cam", lambda row: resolve(row.entry))
CONTEXT_METHODS: Registry[MethodSpec] = Registry("context", _spec)


def _check_new(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a method name is a non-empty string, got {name!r}")
    if name in CAM_METHODS or name in CONTEXT_METHODS or any(row.name == name for row in ROWS):
        raise ValueError(f"a method named {name!r} is registered already")


def register_cam(name: str) -> Callable[[CamFunction], CamFunction]:
    """Register a CAM function ``(A, g) -> (B, u, v)`` under ``name`` at run time (the key ``explain`` uses).

    Built-in methods are rows of :mod:`camlens.catalog` instead.
    """

    def add(function: CamFunction) -> CamFunction:
        _check_new(name)
        CAM_METHODS[name] = function
        return function

    return add


def register_method(
    name: str,
    *,
    uses_layer: bool = True,
    head: HeadFactory | None = None,
    perturbation: bool = False,
    any_layout: bool = False,
) -> Callable[[ContextFunction], ContextFunction]:
    """Register a context method ``(MethodContext) -> (B, h, w)`` under ``name`` at run time.

    ``any_layout``: the method only reads the ``(B, K, u, v)`` view of the layer (or writes back
    through :meth:`camlens.layouts.Layout.to_native`), so channels-last and token layers are fine.
    Built-in methods are rows of :mod:`camlens.catalog` instead.
    """

    def add(function: ContextFunction) -> ContextFunction:
        _check_new(name)
        CONTEXT_METHODS[name] = MethodSpec(name, function, uses_layer, head, perturbation, any_layout)
        return function

    return add


__all__ = [
    "CAM_METHODS",
    "CONTEXT_METHODS",
    "CamFunction",
    "MethodSpec",
    "Registry",
    "combined_head",
    "register_cam",
    "register_method",
]
