"""Resolve the target layer: by module or dotted name, or picked automatically.

The automatic choice is the deepest layer whose output is still a spatial map on its way to the
classifier's pooling: found once per model by a one-image trace with the forward hooks of every module
(removed in ``finally``; the model's ``training`` flags are put back exactly as found).
"""

from __future__ import annotations

import difflib
import weakref

import torch
from torch import Tensor, nn

LayerSpec = None | str | nn.Module

_PASSTHROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Flatten)
_default_cache: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def closest_names(name: str, names: list[str], n: int = 5) -> list[str]:
    """The names most like ``name``, best first (never empty when ``names`` is not)."""
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    if not close:
        close = difflib.get_close_matches(name, names, n=n, cutoff=0.0)
    return close


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(dotted_name, module)`` for a module of ``model`` given by name or by object.

    Raises:
        ValueError: an unknown name (with the closest real names) or a module not inside ``model``.
        TypeError: anything other than a string or a module.
    """
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        modules.pop("", None)
        if layer in modules:
            return layer, modules[layer]
        suggestions = closest_names(layer, list(modules))
        hint = f"; closest: {', '.join(suggestions)}" if suggestions else ""
        raise ValueError(f"the model has no layer named {layer!r}{hint}")
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                if name == "":
                    raise ValueError("target_layer is the model itself: pick a layer inside it")
                return name, module
        raise ValueError(f"target_layer ({type(layer).__name__}) is not a submodule of the model")
    raise TypeError(f"target_layer must be a module or a dotted name, not {type(layer).__name__}")


def _is_pool(module: nn.Module) -> bool:
    return "Pool" in type(module).__name__


def trace_default_layer(model: nn.Module, x: Tensor) -> str:
    """Find the default target layer by running one image through ``model``.

    The choice is the last module (in completion order) whose output is a 4-D ``(B, K, u, v)`` map,
    which is not a pooling layer, not a container that returns a pooling layer's output, not a
    dropout/identity/flatten pass-through, and ran once. Containers complete after their children, so
    ``layer4`` is reported rather than ``layer4.2.relu`` when they return the same tensor.
    """
    names = {module: name for name, module in model.named_modules() if name}
    records: list[tuple[str, nn.Module, object]] = []
    calls: dict[str, int] = {}

    def record(module: nn.Module, _inputs: object, output: object) -> None:
        name = names[module]
        calls[name] = calls.get(name, 0) + 1
        records.append((name, module, output))

    modes = [(module, module.training) for module in model.modules()]
    handles = [module.register_forward_hook(record) for module in names]
    try:
        model.eval()
        with torch.inference_mode(False), torch.no_grad():
            model(x[:1].detach())
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training

    pooled = {id(out) for _, module, out in records if _is_pool(module) and isinstance(out, Tensor)}
    for name, module, out in reversed(records):
        if (
            isinstance(out, Tensor)
            and out.dim() == 4
            and not _is_pool(module)
            and not isinstance(module, _PASSTHROUGH)
            and id(out) not in pooled
            and calls[name] == 1
        ):
            return name
    raise ValueError("found no layer with a (batch, channels, height, width) output to explain: pass target_layer")


def default_layer(model: nn.Module, x: Tensor) -> tuple[str, nn.Module]:
    """The automatic target layer of ``model`` (traced once per model, then cached)."""
    name = _default_cache.get(model)
    modules = dict(model.named_modules())
    if name is None or name not in modules:
        name = trace_default_layer(model, x)
        _default_cache[model] = name
    return name, modules[name]
