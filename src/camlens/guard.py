"""One guard around every ``explain`` / ``capture`` call: one call per model at a time, nothing persists.

:func:`guard` is entered once per call (a nested entry by the same thread, such as ``explain`` calling
``capture``, passes straight through). It

* **checks what can be explained.** A ``torch.compile`` wrapper (``OptimizedModule``) is explained
  through its eager original ``_orig_mod``, which holds the same parameters, so the maps equal the
  eager ones (recorded as ``Explanation.compiled``). Forward hooks and the guided rule do not run inside
  TorchScript or inside compiled code, so a ``torch.jit.script`` / ``torch.jit.trace`` module, a model
  holding one, a compiled submodule or a model compiled in place (``model.compile()``) is refused with
  a ``ValueError`` that names the module and the fix, rather than explained into a silently different map;
* **serialises calls per model.** A re-entrant lock per model object (kept in a
  ``WeakKeyDictionary``, so it dies with the model) is held for the whole call: the layer hooks, the
  automatic layer trace and the buffer snapshot below belong to one call at a time. Calls on different
  model objects run in parallel; grad mode and the guided ``TorchFunctionMode`` are thread-local in
  torch;
* **puts buffers back.** When any module is in training mode, a forward moves batch-norm statistics
  (``running_mean``, ``running_var``, ``num_batches_tracked``). The model is explained as the user left
  it (dropout active, batch norm on batch statistics), and every buffer is restored bit for bit in
  ``finally``, also when the call raises. In eval mode no forward writes a buffer, and the guard copies
  nothing.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
from torch import Tensor, nn

_Function = TypeVar("_Function", bound=Callable[..., Any])
_locks: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_locks_lock = threading.Lock()
_local = threading.local()  # .active: ids of the models this thread is inside a guard for


@dataclass(frozen=True)
class Guarded:
    """What a guarded call runs: the module to explain, and whether it was unwrapped from ``torch.compile``."""

    model: nn.Module
    compiled: bool


def _optimized_module_type() -> type | None:
    # torch.compile imports torch._dynamo; if it was never imported there is no compiled module to find,
    # and importing it here would cost a second per process.
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return getattr(eval_frame, "OptimizedModule", None)


def _unwrap(model: nn.Module) -> tuple[nn.Module, bool]:
    optimized = _optimized_module_type()
    compiled = False
    while optimized is not None and isinstance(model, optimized):
        model = model._orig_mod  # type: ignore[assignment]
        compiled = True
    return model, compiled


def _check_eager(modules: list[tuple[str, nn.Module]]) -> None:
    optimized = _optimized_module_type()
    for name, module in modules:
        where = f"submodule {name!r}" if name else "the model"
        if isinstance(module, torch.jit.ScriptModule):
            raise ValueError(
                f"{where} is a TorchScript module (torch.jit.script / torch.jit.trace): hooks do not run inside "
                "TorchScript, so no map would be right; pass the original eager module"
            )
        if optimized is not None and isinstance(module, optimized):
            raise ValueError(
                f"{where} is compiled with torch.compile: hooks and the guided rule do not run reliably inside "
                f"compiled code; pass a model built from its eager original (`{name}._orig_mod`), or compile "
                "the whole model (camlens then explains `model._orig_mod`)"
            )
        if getattr(module, "_compiled_call_impl", None) is not None:
            raise ValueError(
                f"{where} was compiled in place (Module.compile()): hooks and the guided rule do not run reliably "
                "inside compiled code; explain an uncompiled copy, or use `compiled = torch.compile(model)`, "
                "whose eager original camlens explains"
            )


def eager_module(model: nn.Module) -> tuple[nn.Module, bool]:
    """The module to explain for ``model``, and whether it was unwrapped from ``torch.compile``.

    Raises:
        ValueError: TorchScript anywhere in the model, a compiled submodule, or a model compiled in place.
    """
    eager, compiled = _unwrap(model)
    _check_eager(list(eager.named_modules()))
    return eager, compiled


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock every ``explain`` / ``capture`` call on ``model`` holds (one per model object)."""
    with _locks_lock:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.RLock()
        return lock


_Saved = tuple[nn.Module, str, Tensor, Tensor]


def _snapshot_buffers(modules: list[nn.Module]) -> list[_Saved]:
    saved = []
    for module in modules:
        for name, buffer in module._buffers.items():
            if buffer is not None:
                saved.append((module, name, buffer, buffer.detach().clone()))
    return saved


def _restore_buffers(saved: list[_Saved]) -> None:
    with torch.no_grad():
        for module, name, original, copy in saved:
            if module._buffers.get(name) is not original:
                module._buffers[name] = original
            # always copied back: batch norm writes its running statistics without bumping ``_version``
            original.copy_(copy)


@contextlib.contextmanager
def guard(model: nn.Module) -> Iterator[Guarded]:
    """Hold ``model``'s lock for one call, explain its eager module, and put every buffer back.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
        >>> with guard(model) as guarded:
        ...     _ = guarded.model(torch.rand(2, 3, 8, 8))
        >>> model[1].num_batches_tracked.item(), model[1].running_mean.abs().sum().item()
        (0, 0.0)
    """
    eager, compiled = _unwrap(model)
    active: set[int] | None = getattr(_local, "active", None)
    if active is None:
        active = _local.active = set()
    if id(eager) in active:  # an outer call of this thread already guards this model
        yield Guarded(eager, compiled)
        return
    named = list(eager.named_modules())
    _check_eager(named)
    with model_lock(eager):
        active.add(id(eager))
        try:
            modules = [module for _, module in named]
            modes = [module.training for module in modules]
            saved = _snapshot_buffers(modules) if any(modes) else []
            try:
                yield Guarded(eager, compiled)
            finally:
                _restore_buffers(saved)
                for module, training in zip(modules, modes, strict=True):
                    if module.training != training:
                        module.training = training
        finally:
            active.discard(id(eager))


def guarded_call(function: _Function) -> _Function:
    """Run ``function(model, ...)`` inside :func:`guard` (on the eager module of a compiled model)."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        by_name = "model" in kwargs
        model = kwargs["model"] if by_name else (args[0] if args else None)
        if not isinstance(model, nn.Module):
            return function(*args, **kwargs)  # the function's own validation says what is wrong
        with guard(model) as guarded:
            if by_name:
                return function(*args, **{**kwargs, "model": guarded.model})
            return function(guarded.model, *args[1:], **kwargs)

    return cast(_Function, call)
