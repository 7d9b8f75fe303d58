"""The squashing a model's forward may end in, found without touching the model.

A multi-label classifier usually ends in ``nn.Sigmoid`` (or ``torch.sigmoid(logits)``), some classifiers in
``nn.Softmax`` / ``nn.LogSoftmax``. Explained on that output, a CAM sees ``dp/dA = p (1 - p) dz/dA``: for a
class the model is sure of (``p`` near 1) the gradient vanishes, and Grad-CAM is zero. The CAM papers explain
the score *before* the softmax, so camlens does the same for these heads.

:class:`HeadRecorder` is a ``TorchFunctionMode`` that remembers the last sigmoid / softmax / log-softmax call
(``torch.sigmoid``, ``Tensor.sigmoid``, ``torch.special.expit``, ``F.softmax``, ``torch.softmax``,
``Tensor.softmax``, their ``log_softmax`` forms; ``nn.Sigmoid``, ``nn.Softmax`` and ``nn.LogSoftmax`` call
them): its output and its input. After the forward, :meth:`HeadRecorder.found` returns the input of that call
only when the model's output (or its ``.logits`` / ``["logits"]``) *is* that call's output tensor, so a
sigmoid inside the network (squeeze-and-excitation gates, attention's softmax) is never taken for the head.
Nothing is replaced: the mode lives for one forward, and the model runs exactly as written.

The engine enters the mode when the target layer's hook fires (only the head after the layer is watched,
so the layers before it run at full speed), or for the whole forward when it records the whole graph (the
automatic layer choice, guided backprop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

SIGMOID = "sigmoid"
SOFTMAX = "softmax"
LOG_SOFTMAX = "log_softmax"
REGRESSION = "regression"
SQUASHINGS = (SIGMOID, SOFTMAX, LOG_SOFTMAX)

_KINDS: dict[Any, str] = {
    torch.sigmoid: SIGMOID,
    torch.Tensor.sigmoid: SIGMOID,
    torch.special.expit: SIGMOID,
    F.softmax: SOFTMAX,
    torch.softmax: SOFTMAX,
    torch.Tensor.softmax: SOFTMAX,
    torch.special.softmax: SOFTMAX,
    F.log_softmax: LOG_SOFTMAX,
    torch.log_softmax: LOG_SOFTMAX,
    torch.Tensor.log_softmax: LOG_SOFTMAX,
    torch.special.log_softmax: LOG_SOFTMAX,
}


@dataclass(frozen=True)
class Head:
    """The squashing the model's output came from, and the tensor before it (part of the autograd graph)."""

    kind: str  # "sigmoid", "softmax" or "log_softmax"
    logits: Tensor  # the squashing's input: the pre-activation scores


def _dim(args: tuple, kwargs: dict[str, Any]) -> Any:
    return args[1] if len(args) > 1 else kwargs.get("dim")


class HeadRecorder(TorchFunctionMode):
    """Remembers the last sigmoid / softmax / log-softmax call of a forward (see the module docstring).

    Use :meth:`start` and :meth:`stop` (start may be called from inside the forward, by a hook; both are
    idempotent), then :meth:`found` with the model's output.
    """

    def __init__(self) -> None:
        super().__init__()
        self.active = False
        self.last: tuple[str, Tensor, Tensor, Any] | None = None  # (kind, result, input, dim)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        kind = _KINDS.get(func)
        if kind is not None and args and isinstance(args[0], Tensor) and isinstance(result, Tensor):
            self.last = (kind, result, args[0], None if kind == SIGMOID else _dim(args, kwargs))
        return result

    def start(self) -> None:
        """Begin watching (a no-op when already watching)."""
        if not self.active:
            self.__enter__()
            self.active = True

    def stop(self) -> None:
        """Stop watching (a no-op when not watching)."""
        if self.active:
            self.active = False
            self.__exit__(None, None, None)

    def found(self, logits: Tensor | None, batch: int) -> Head | None:
        """The head whose output is ``logits`` (the model's output tensor or its ``.logits``), or None.

        A softmax counts only over the classes of a ``(B, N)`` output (dim 1, -1, or implicit).
        """
        if self.last is None or logits is None:
            return None
        kind, result, before, dim = self.last
        if result is not logits or before.shape != logits.shape or logits.shape[:1] != (batch,):
            return None
        if kind != SIGMOID and (logits.dim() != 2 or dim not in (None, 1, -1)):
            return None
        return Head(kind, before)
