"""Where and in what precision to explain: ``device="auto"``, mixed precision that is checked against
float32 before it is used, and pinned-memory transfers of input batches.

Mixed precision runs the network's forward and backward under :func:`torch.autocast` (bfloat16 or float16
on CUDA, bfloat16 on the CPU); the captured activations and gradients are cast back to float32 before any
method's arithmetic, so only the network runs in low precision. Whether the maps stay close to the
float32 maps depends on the model and the method: guided backprop flips ReLU gates near zero and moves a
lot. :func:`camlens.precision.precision_deviation` measures it on a batch and
:func:`camlens.precision.pick_precision` keeps the low precision only within a tolerance (1e-3 by default);
float32 is the default everywhere.

Measured (tests/unit/test_device.py, bundled EfficientNet-Lite0, examples/cat.jpg, CPU bfloat16): Grad-CAM
deviates by about 2.5e-2, guided backprop by about 0.4 of its range -- far over 1e-3, so mixed precision
stays off unless asked for, and ``pick_precision`` declines it there.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from camlens.errors import UsageError

if TYPE_CHECKING:
    from camlens.engine import Capture

Precision = Literal["float32", "bfloat16", "float16"]
PRECISIONS: tuple[Precision, ...] = ("float32", "bfloat16", "float16")
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA if available, else Apple's MPS, else the CPU; any other name is checked.

    Raises:
        UsageError (a ValueError): an unknown name, or a device this machine does not have.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {device!r} (try auto, cpu, cuda, cuda:1 or mps)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device} is not available here (no CUDA); use auto or cpu")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise UsageError(f"device {device} is not available here ({torch.cuda.device_count()} CUDA devices)")
    if resolved.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError(f"device {device} is not available here (no MPS); use auto or cpu")
    return resolved


def to_device(batch: Tensor, device: torch.device) -> Tensor:
    """Copy a CPU batch to ``device``; to CUDA through pinned (page-locked) memory without blocking.

    The copy is ordered on the current CUDA stream, so kernels launched after it see the data; the host
    can meanwhile decode the next batch.
    """
    if device.type != "cuda" or batch.device.type != "cpu":
        return batch.to(device)
    pinned = batch if batch.is_pinned() else batch.pin_memory()
    return pinned.to(device, non_blocking=True)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None for float32), or a UsageError."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "float32":
        return None
    if device.type == "cpu" and precision != "bfloat16":
        raise UsageError(f"precision {precision} is not offered on the CPU; use bfloat16 or float32")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"mixed precision is offered on CUDA and the CPU, not {device.type}; use float32")
    return _DTYPES[precision]


@contextlib.contextmanager
def mixed_precision(device: torch.device, precision: str) -> Iterator[None]:
    """:func:`torch.autocast` for ``precision`` on ``device``; nothing at all for float32."""
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


def capture_in_float32(cap: Capture) -> Capture:
    """The capture with its half-precision tensors (autocast's) cast to float32, before the methods' arithmetic."""

    def cast(value: Tensor | None) -> Tensor | None:
        return value.float() if value is not None and value.dtype in (torch.bfloat16, torch.float16) else value

    return dataclasses.replace(
        cap,
        logits=cast(cap.logits),
        scores=cap.scores.float() if cap.scores.dtype in (torch.bfloat16, torch.float16) else cap.scores,
        activations=cast(cap.activations),
        gradients=cast(cap.gradients),
        input_gradient=cast(cap.input_gradient),
    )
