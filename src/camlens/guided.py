"""The guided-backpropagation rule at every pointwise activation the forward pass runs.

Springenberg et al. 2015 define guided backprop for ReLU networks: at each ReLU,
``grad_in = (x_in > 0) * (grad_out > 0) * grad_out``. camlens applies the same idea to any pointwise
activation ``y = f(x)``: only positive signals flow back, through the activation's own derivative,

    ``grad_in = f'(x) * max(grad_out, 0)``                                         (generalised rule)

For ReLU this is exactly Springenberg's rule; at a bounded ReLU (ReLU6, ``Hardtanh(0, k)``) the gradient
passes where ``0 < x_in < k`` and ``grad_out > 0``. Routed activations, in functional and module form
(modules call the functional form): ReLU, ReLU6, ``Hardtanh(0, k)``, GELU (exact and tanh forms), SiLU /
Swish, Hardswish, Mish, LeakyReLU, ELU, CELU, SELU, Softplus, and the pattern ``x * sigmoid(c * x)``
(QuickGELU with ``c = 1.702`` as timm and CLIP write it, Swish written out with ``c = 1``).

**Gates are left alone**: a sigmoid, hard sigmoid, tanh or softmax that multiplies another tensor
(squeeze-and-excitation, attention's softmax, gated units) is not an activation of the chain, so it keeps
its ordinary gradient. Hardsigmoid is always treated as such a gate (it is one in MobileNetV3 and
EfficientNet-style SE blocks).

No module is replaced. A :class:`~torch.overrides.TorchFunctionMode`, active only for one forward
pass, routes every activation *call* through an autograd function. Its forward is the ordinary op (in
place where the call was); its backward follows a :class:`GuidedSwitch`, so one recorded graph serves
both the true gradient (for Grad-CAM) and the guided one. The mode counts what it routed by kind
(``routed``), which ``explain`` reports as ``result.guided_rule``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

#: Kinds routed with Springenberg's exact ReLU rule; every other kind uses the generalised rule.
RELU_KINDS = frozenset({"relu", "relu6", "hardtanh"})


class GuidedSwitch:
    """Which rule the recorded activations apply on the way back: ``guided`` or the true derivative."""

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


class _Pointwise(torch.autograd.Function):
    """Any pointwise activation ``f``: forward as called, backward ``f'(x) * grad`` or ``f'(x) * ReLU(grad)``.

    ``f'(x) * v`` is computed as the vector-Jacobian product of ``f`` at the saved input (``f`` is
    pointwise, so its Jacobian is diagonal and the product is exactly element-wise).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, f: Callable[[Tensor], Tensor], inplace: bool, switch: GuidedSwitch) -> Tensor:
        ctx.f = f
        ctx.switch = switch
        if inplace:
            ctx.save_for_backward(x.clone())
            x.copy_(f(x))
            ctx.mark_dirty(x)
            return x
        ctx.save_for_backward(x)
        return f(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (x,) = ctx.saved_tensors
        if ctx.switch.guided:
            grad = grad.clamp(min=0)
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            (grad_in,) = torch.autograd.grad(ctx.f(leaf), leaf, grad)
        return grad_in, None, None, None


# A parser returns (kind, input, out-of-place f, in place, ReLU upper bound) for an activation call, or None.
_Parsed = tuple[str, Any, Callable[[Tensor], Tensor], bool, float | None] | None
_Parser = Callable[[tuple, dict], _Parsed]


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _input(args: tuple, kwargs: dict) -> Any:
    return args[0] if args else kwargs.get("input", kwargs.get("self"))


def _relu(always_inplace: bool) -> _Parser:
    def parse(args: tuple, kwargs: dict) -> _Parsed:
        inplace = always_inplace or bool(_arg(args, kwargs, 1, "inplace", False))
        return "relu", _input(args, kwargs), torch.relu, inplace, None

    return parse


def _relu6(args: tuple, kwargs: dict) -> _Parsed:
    return "relu6", _input(args, kwargs), F.relu6, bool(_arg(args, kwargs, 1, "inplace", False)), 6.0


def _hardtanh(always_inplace: bool) -> _Parser:
    def parse(args: tuple, kwargs: dict) -> _Parsed:
        low = _arg(args, kwargs, 1, "min_val", -1.0)
        high = _arg(args, kwargs, 2, "max_val", 1.0)
        inplace = always_inplace or bool(_arg(args, kwargs, 3, "inplace", False))
        if low != 0 or high <= 0:
            return None  # not a (bounded) ReLU: a clamp, ordinary gradient
        return "hardtanh", _input(args, kwargs), lambda v: F.hardtanh(v, 0.0, float(high)), inplace, float(high)

    return parse


def _simple(kind: str, function: Callable[[Tensor], Tensor], inplace_index: int | None = 1) -> _Parser:
    def parse(args: tuple, kwargs: dict) -> _Parsed:
        inplace = False if inplace_index is None else bool(_arg(args, kwargs, inplace_index, "inplace", False))
        return kind, _input(args, kwargs), function, inplace, None

    return parse


def _gelu(args: tuple, kwargs: dict) -> _Parsed:
    approximate = _arg(args, kwargs, 1, "approximate", "none")
    kind = "gelu_tanh" if approximate == "tanh" else "gelu"
    return kind, _input(args, kwargs), lambda v: F.gelu(v, approximate=approximate), False, None


def _leaky_relu(always_inplace: bool) -> _Parser:
    def parse(args: tuple, kwargs: dict) -> _Parsed:
        slope = float(_arg(args, kwargs, 1, "negative_slope", 0.01))
        inplace = always_inplace or bool(_arg(args, kwargs, 2, "inplace", False))
        return "leaky_relu", _input(args, kwargs), lambda v: F.leaky_relu(v, slope), inplace, None

    return parse


def _elu(kind: str, function: Callable[..., Tensor], always_inplace: bool) -> _Parser:
    def parse(args: tuple, kwargs: dict) -> _Parsed:
        alpha = float(_arg(args, kwargs, 1, "alpha", 1.0))
        inplace = always_inplace or bool(_arg(args, kwargs, 2, "inplace", False))
        return kind, _input(args, kwargs), lambda v: function(v, alpha), inplace, None

    return parse


def _softplus(args: tuple, kwargs: dict) -> _Parsed:
    beta = _arg(args, kwargs, 1, "beta", 1.0)
    threshold = _arg(args, kwargs, 2, "threshold", 20.0)
    return "softplus", _input(args, kwargs), lambda v: F.softplus(v, beta, threshold), False, None


def _selu(always_inplace: bool) -> _Parser:
    def parse(args: tuple, kwargs: dict) -> _Parsed:
        inplace = always_inplace or bool(_arg(args, kwargs, 1, "inplace", False))
        return "selu", _input(args, kwargs), F.selu, inplace, None

    return parse


_PARSERS: dict[Any, _Parser] = {
    F.relu: _relu(False),
    torch.relu: _relu(False),
    torch.Tensor.relu: _relu(False),
    torch.relu_: _relu(True),
    torch.Tensor.relu_: _relu(True),
    F.relu6: _relu6,
    F.hardtanh: _hardtanh(False),
    F.hardtanh_: _hardtanh(True),
    F.gelu: _gelu,
    F.silu: _simple("silu", F.silu),
    F.hardswish: _simple("hardswish", F.hardswish),
    F.mish: _simple("mish", F.mish),
    F.leaky_relu: _leaky_relu(False),
    F.leaky_relu_: _leaky_relu(True),
    F.elu: _elu("elu", F.elu, False),
    F.elu_: _elu("elu", F.elu, True),
    F.celu: _elu("celu", F.celu, False),
    F.softplus: _softplus,
    F.selu: _selu(False),
    torch.selu_: _selu(True),
}
_PARSERS.setdefault(F.relu_, _relu(True))

# the out-of-place products: the scale ``c * x`` and the product ``x * sigmoid(c x)`` of the pattern alike
_MUL_OPS = frozenset({torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__})
_SIGMOID_OPS = frozenset({torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid})
_MUL_INPLACE_OPS = frozenset({torch.Tensor.mul_, torch.Tensor.__imul__})


def _sigmoid_kind(scale: float) -> str:
    if scale == 1.0:
        return "silu"
    if abs(scale - 1.702) < 1e-6:
        return "quick_gelu"
    return "x_sigmoid"


class GuidedMode(TorchFunctionMode):
    """While active, every pointwise activation call is recorded through the switchable guided function.

    ``routed`` counts the calls by kind (``{"relu": 17, "gelu": 12}``). The pattern ``x * sigmoid(c x)``
    is recognised from its three consecutive calls (scale, sigmoid, product); a sigmoid of anything
    else is a gate and keeps its ordinary gradient.
    """

    def __init__(self, switch: GuidedSwitch) -> None:
        super().__init__()
        self.switch = switch
        self.routed: dict[str, int] = {}
        self._scaled: tuple[Tensor, Tensor, float] | None = None  # (c * x, x, c), the last scaling
        # the last sigmoid: (its output, its input t, x when t = c * x, c)
        self._sigmoid: tuple[Tensor, Tensor, Tensor | None, float] | None = None

    @property
    def relu_calls(self) -> int:
        """How many ReLU-family calls were routed (Springenberg's exact rule)."""
        return sum(n for kind, n in self.routed.items() if kind in RELU_KINDS)

    def _count(self, kind: str) -> None:
        self.routed[kind] = self.routed.get(kind, 0) + 1

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        parser = _PARSERS.get(func)
        if parser is not None:
            parsed = parser(args, kwargs)
            if parsed is not None and isinstance(parsed[1], Tensor) and parsed[1].is_floating_point():
                kind, x, function, inplace, upper = parsed
                self._count(kind)
                if kind in RELU_KINDS:
                    return _ClampReLU.apply(x, upper, inplace, self.switch)
                return _Pointwise.apply(x, function, inplace, self.switch)
        if func in _MUL_OPS or func in _MUL_INPLACE_OPS:
            routed = self._x_sigmoid(func, args)
            if routed is not None:
                return routed
        result = func(*args, **kwargs)
        if func in _MUL_OPS and len(args) == 2 and not kwargs:
            a, b = args
            if isinstance(a, Tensor) and isinstance(b, int | float) and not isinstance(b, bool):
                self._scaled = (result, a, float(b))
        elif func in _SIGMOID_OPS and args and isinstance(args[0], Tensor):
            t = args[0]
            scaled = self._scaled if self._scaled is not None and t is self._scaled[0] else None
            self._sigmoid = (result, t, None if scaled is None else scaled[1], 1.0 if scaled is None else scaled[2])
        return result

    def _x_sigmoid(self, func: Any, args: tuple) -> Tensor | None:
        """Route ``x * sigmoid(c x)`` (QuickGELU, written-out Swish) when the product closes the pattern."""
        if self._sigmoid is None or len(args) != 2:
            return None
        s, direct, source, scale = self._sigmoid
        a, b = args
        other = b if a is s else a if b is s else None
        if other is None:
            return None
        if other is source:  # x * sigmoid(c * x)
            x = source
        elif other is direct:  # x * sigmoid(x)
            x, scale = direct, 1.0
        else:
            return None
        self._sigmoid = self._scaled = None
        inplace = func in _MUL_INPLACE_OPS
        if inplace and a is not x:
            return None
        self._count(_sigmoid_kind(scale))
        return _Pointwise.apply(x, lambda v: v * torch.sigmoid(scale * v), inplace, self.switch)


GuidedReLUMode = GuidedMode  # the former name
