"""Resolve the target layer: by module or dotted name, or picked automatically.

The automatic choice is **the deepest spatial layer whose gradient at the spatial positions is not
identically zero**. It is made in the same forward pass as the explanation (so the model, and any
forward hook of the user's, runs exactly once per call): every module's 3-D or 4-D output is recorded
(:class:`CandidateRecorder`), one ``autograd.grad`` gives the score's gradient at all of them, and the
last module to complete whose output

* has a spatial layout (:mod:`camlens.layouts`: a map or tokens) with at least 2 positions,
* is not a pooling layer, a container returning a pooling layer's output, or a pass-through
  (dropout, identity, flatten), and ran once,
* gets a gradient that is not identically zero at the spatial positions (prefix tokens excluded), and
  activations that are not constant over the positions (beyond rounding),
* is not a ``Linear`` projection of another such layer (attention's ``qkv``: its query part gets no
  gradient; the projection's input is the representation)

is chosen, and remembered per model and input size. In a class-token ViT only the class token reaches
the head after the last attention, so the rule lands on the last block's first norm (the input of its
attention); in CNNs, on the last map before the global pooling; never after the pooling.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from camlens.candidates import AUTO as AUTO
from camlens.candidates import AutoChoice as AutoChoice
from camlens.candidates import AutoLayer as AutoLayer
from camlens.candidates import CandidateRecorder as CandidateRecorder
from camlens.candidates import UninformativeLayerError as UninformativeLayerError
from camlens.candidates import cached_default as cached_default
from camlens.candidates import remember_default as remember_default
from camlens.engine import capture, check_input
from camlens.errors import closest_names as closest_names
from camlens.guard import guard
from camlens.layouts import LayoutSpec

LayerSpec = None | str | nn.Module


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


def default_layer(model: nn.Module, x: Tensor) -> tuple[str, nn.Module]:
    """The automatic target layer of ``model`` for inputs like ``x`` (chosen once, then cached).

    The first call for a model and input size runs one forward and backward of the predicted class
    (see the module doc); ``explain`` makes the same choice inside its own forward instead.
    """
    found = cached_default(model, x.shape[2:])
    if found is not None:
        return found
    cap = capture(model, x[:1], None, AUTO)  # the engine makes the choice
    assert cap.layer_name is not None
    return cap.layer_name, dict(model.named_modules())[cap.layer_name]


def candidate_layers(model: nn.Module, x: Tensor, layout: LayoutSpec = None) -> list[str]:
    """The layers that can be explained for inputs like ``x``, in the order they complete: the candidates of
    the automatic rule.

    Each outputs a spatial map or tokens of at least 2 positions (read by ``layout``, see
    :mod:`camlens.layouts`), ran once, and is neither a pooling layer (nor a container passing a pooling
    layer's output on) nor a pass-through (dropout, identity, flatten). The automatic choice is the deepest
    of them that gets a gradient at its positions and is not a ``Linear`` projection of another (the module
    doc). One forward pass of ``x[:1]``, recorded by autograd, with the model left as found (see
    :mod:`camlens.guard`).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Dropout(),
        ...                             torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> candidate_layers(model, torch.rand(1, 3, 16, 16))
        ['0', '1']
    """
    check_input(model, x, volumes=True)
    size = tuple(int(s) for s in x.shape[2:])
    with guard(model) as guarded, torch.inference_mode(False), torch.enable_grad():
        x_in = x[:1].detach().clone().requires_grad_(True)
        with CandidateRecorder(guarded.model, 1) as recorder:
            guarded.model(x_in)
        return [record.name for record, _ in recorder.candidates(size, layout)]
