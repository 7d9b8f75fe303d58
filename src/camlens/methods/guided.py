"""The guided-backpropagation rule at every ReLU the forward pass runs.

Springenberg et al. 2015: at each ReLU, ``grad_in = (x_in > 0) * (grad_out > 0) * grad_out``; at a
bounded ReLU (ReLU6, ``Hardtanh(0, 6)``) the gradient passes where ``0 < x_in < 6`` and ``grad_out > 0``.

No module is replaced. A :class:`~torch.overrides.TorchFunctionMode`, active only for one forward
pass, routes every ReLU *call* -- ``nn.ReLU`` / ``nn.ReLU6`` / ``nn.Hardtanh(0, k)`` modules (in place
or not), ``F.relu``, ``torch.relu``, ``Tensor.relu``, their ``_`` in-place forms, ``F.relu6`` and
``F.hardtanh`` -- through one autograd function. Its forward is the ordinary op (in place where the
call was); its backward follows a :class:`GuidedSwitch`, so one recorded graph serves both the true
gradient (for Grad-CAM) and the guided one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode


class GuidedSwitch:
    """Which rule the recorded ReLUs apply on the way back: ``guided`` or the true derivative."""

    def __init__(self) -> None:
        self.guided = False


class _ClampReLU(torch.autograd.Function):
    """ReLU / clamp(0, upper) whose backward is the true derivative or the guided rule (``switch``).

    Like PyTorch's own ReLU it keeps its output for the backward pass (``out > 0`` exactly where
    ``x_in > 0``, also after an in-place call) and uses the fused ``threshold_backward`` /
    ``hardtanh_backward`` kernels, so a later in-place op on that output is an error here exactly when
    it is one for plain autograd.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, upper: float | None, inplace: bool, switch: GuidedSwitch) -> Tensor:
        if upper is None:
            out = torch.relu_(x) if inplace else torch.relu(x)
        else:
            out = F.hardtanh_(x, 0.0, upper) if inplace else F.hardtanh(x, 0.0, upper)
        if inplace:
            ctx.mark_dirty(x)
        ctx.save_for_backward(out)
        ctx.upper = upper
        ctx.switch = switch
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (out,) = ctx.saved_tensors
        if ctx.switch.guided:
            grad = grad.clamp(min=0)  # only positive signals flow back
        if ctx.upper is None:
            return torch.ops.aten.threshold_backward(grad, out, 0), None, None, None
        return torch.ops.aten.hardtanh_backward(grad, out, 0.0, ctx.upper), None, None, None


# Each parser returns (input, upper bound or None, in place) for a ReLU call, or None for another call.
_Parsed = tuple[Tensor, float | None, bool] | None


def _relu(args: tuple, kwargs: dict) -> _Parsed:
    inplace = args[1] if len(args) > 1 else kwargs.get("inplace", False)
    return _input(args, kwargs), None, bool(inplace)


def _relu_(args: tuple, kwargs: dict) -> _Parsed:
    return _input(args, kwargs), None, True


def _relu6(args: tuple, kwargs: dict) -> _Parsed:
    inplace = args[1] if len(args) > 1 else kwargs.get("inplace", False)
    return _input(args, kwargs), 6.0, bool(inplace)


def _hardtanh_parser(always_inplace: bool) -> Callable[[tuple, dict], _Parsed]:
    def parse(args: tuple, kwargs: dict) -> _Parsed:
        low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        high = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
        inplace = always_inplace or bool(args[3] if len(args) > 3 else kwargs.get("inplace", False))
        if low != 0 or high <= 0:
            return None  # not a (bounded) ReLU: ordinary gradient
        return _input(args, kwargs), float(high), inplace

    return parse


def _input(args: tuple, kwargs: dict) -> Any:
    return args[0] if args else kwargs.get("input", kwargs.get("self"))


_PARSERS: dict[Any, Callable[[tuple, dict], _Parsed]] = {
    F.relu: _relu,
    torch.relu: _relu,
    torch.Tensor.relu: _relu,
    torch.relu_: _relu_,
    torch.Tensor.relu_: _relu_,
    F.relu6: _relu6,
    F.hardtanh: _hardtanh_parser(always_inplace=False),
    F.hardtanh_: _hardtanh_parser(always_inplace=True),
}
_PARSERS.setdefault(F.relu_, _relu_)


class GuidedReLUMode(TorchFunctionMode):
    """While active, every ReLU call is recorded through the switchable guided function."""

    def __init__(self, switch: GuidedSwitch) -> None:
        super().__init__()
        self.switch = switch
        self.relu_calls = 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        parser = _PARSERS.get(func)
        if parser is not None:
            parsed = parser(args, kwargs)
            if parsed is not None and isinstance(parsed[0], Tensor) and parsed[0].is_floating_point():
                x, upper, inplace = parsed
                self.relu_calls += 1
                return _ClampReLU.apply(x, upper, inplace, self.switch)
        return func(*args, **kwargs)
