"""The part of a network after a layer, as a callable of that layer's output (for Ablation-CAM).

:func:`layer_tail` traces the model with ``torch.fx`` (the target layer kept as one leaf) and cuts the
graph after the layer's node. The cut is only made where it is exact: the layer is called once, and no
node after it reads anything computed before it except the layer's own output and constants (a skip
connection around the layer, a batch size read off the input, a second input). Otherwise, or where the
model cannot be traced symbolically (data-dependent control flow), it returns ``None`` and the caller
re-runs the model with a hook instead.

The returned ``GraphModule`` *refers to* the model's own submodules and parameters (nothing is copied
or replaced, and the model is never modified). It is cached per model and layer name, keyed also on the
identity of every submodule, so that swapping a submodule after a call makes a fresh trace.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

_tails: weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[tuple[int, ...], Any]]] = weakref.WeakKeyDictionary()


class _LeafTracer(torch.fx.Tracer):
    def __init__(self, leaf: str) -> None:
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return qualified_name == self.leaf or super().is_leaf_module(m, qualified_name)


def _cut(model: nn.Module, name: str) -> torch.fx.GraphModule | None:
    try:
        graph = _LeafTracer(name).trace(model)
    except Exception:  # noqa: BLE001 - any failure to trace means "no cut", never an error for the user
        return None
    nodes = list(graph.nodes)
    calls = [n for n in nodes if n.op == "call_module" and n.target == name]
    if len(calls) != 1:
        return None
    layer = calls[0]
    position = nodes.index(layer)
    before = set(nodes[:position])
    tail = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {layer: tail.placeholder("activations")}
    for node in nodes[position + 1 :]:
        for needed in node.all_input_nodes:
            if needed in env:
                continue
            if needed in before and needed.op == "get_attr":
                env[needed] = tail.node_copy(needed)
                continue
            return None  # the tail reads a value computed before the layer
        if node.op == "placeholder":
            return None
        env[node] = tail.node_copy(node, lambda n: env[n])
    try:
        tail.lint()
        return torch.fx.GraphModule(model, tail, class_name="LayerTail")
    except Exception:  # noqa: BLE001
        return None


def layer_tail(model: nn.Module, name: str) -> torch.fx.GraphModule | None:
    """The model's computation after submodule ``name`` as ``tail(activations) -> output``, or ``None``.

    ``None`` where the cut would not be exact (see the module's docstring). Callers should still check
    the tail on the unperturbed activations against the captured output.
    """
    fingerprint = tuple(id(m) for m in model.modules())
    cache = _tails.setdefault(model, {})
    if name in cache and cache[name][0] == fingerprint:
        return cache[name][1]
    cut = _cut(model, name)
    cache[name] = (fingerprint, cut)
    return cut
