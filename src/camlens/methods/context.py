"""Methods that need more than ``(A, g)``: a registry of functions on a :class:`MethodContext`.

A CAM weighting that only needs the activations and gradients is a pure ``(A, g)`` function in
``CAM_METHODS``. Some methods need more:

* the model's classifier weights (``cam``), found by tracing the head;
* more derivatives on the same recorded graph (``finercam``: other classes' scores; ``shapleycam``: a
  Hessian-vector product). They declare a ``head`` factory; the engine runs it before freeing the graph
  and stores what it returns in ``Capture.extras``;
* re-running the part of the model after the target layer on perturbed activations (``ablationcam``),
  or the model on perturbed inputs (``scorecam``, ``sscam``, ``iscam``, ``smoothgradcam++``, ``sess``);
* the whole input graph (``fullgrad``, ``legrad``).

Each is a function ``(context) -> map``, a row of :mod:`camlens.catalog` (or registered at run time with
:func:`camlens.methods.register_method`); the map is ``(B, h, w)`` at any resolution (layer or image) and
signed, before the final ReLU, like a CAM function's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from camlens.engine import Capture, HeadFunction
from camlens.heads import REGRESSION, SIGMOID, SQUASHINGS
from camlens.targets import Targets, forward_logits, logits_of


@dataclass(frozen=True)
class MethodOptions:
    """Settings of the methods that have some (defaults follow each method's paper or reference code).

    Attributes:
        batch_size: how many perturbed copies go through the model at once (Score-CAM family,
            Ablation-CAM, SESS patches); peak memory grows with it, not with the channel count.
        num_samples: noisy/integration samples (SS-CAM 35, IS-CAM 10, Smooth Grad-CAM++ 4 when None).
        noise_std: noise standard deviation (SS-CAM 2.0 on the masks, Smooth Grad-CAM++ 0.3 on the input
            when None).
        seed: seed of the noise generator, so that noisy methods are reproducible.
        finer_alpha: Finer-CAM's comparison strength ``alpha``.
        finer_classes: how many most-similar classes Finer-CAM compares against.
        head_fusion: how attention rollout fuses the heads ("mean", "max" or "min").
        discard_ratio: attention rollout's fraction of the lowest attention entries set to zero.
    """

    batch_size: int = 32
    num_samples: int | None = None
    noise_std: float | None = None
    seed: int = 0
    finer_alpha: float = 1.0
    finer_classes: int = 3
    head_fusion: str = "mean"
    discard_ratio: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if self.num_samples is not None and (not isinstance(self.num_samples, int) or self.num_samples < 1):
            raise ValueError(f"num_samples must be a positive int or None, got {self.num_samples!r}")
        if self.noise_std is not None and not self.noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0 or None, got {self.noise_std!r}")
        if self.finer_classes < 1:
            raise ValueError(f"finer_classes must be >= 1, got {self.finer_classes!r}")
        if self.head_fusion not in ("mean", "max", "min"):
            raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', got {self.head_fusion!r}")
        if not 0.0 <= self.discard_ratio < 1.0:
            raise ValueError(f"discard_ratio must be in [0, 1), got {self.discard_ratio!r}")

    def generator(self, device: torch.device) -> torch.Generator:
        """A fresh generator seeded with ``seed`` (the user's global RNG is never touched)."""
        return torch.Generator(device=device).manual_seed(self.seed)


@dataclass(frozen=True)
class MethodContext:
    """Everything a context method may use: the model, input, target layer, capture and options."""

    model: nn.Module
    x: Tensor
    targets: Targets
    layer: tuple[str, nn.Module] | None
    capture: Capture
    options: MethodOptions = field(default_factory=MethodOptions)

    @property
    def activations(self) -> Tensor:
        if self.capture.activations is None:
            raise ValueError("this method needs a target layer")
        return self.capture.activations

    @property
    def gradients(self) -> Tensor:
        if self.capture.gradients is None:
            raise ValueError("this method needs a target layer")
        return self.capture.gradients

    @property
    def module(self) -> nn.Module:
        if self.layer is None:
            raise ValueError("this method needs a target layer")
        return self.layer[1]

    @property
    def layout_spec(self) -> Any:
        """What to pass as ``layout=`` to capture this layer again the same way."""
        layout = self.capture.layout
        if layout is None:
            return None
        return layout.reshape if layout.kind == "custom" else layout.kind

    def run(self, forward: Callable[[], Any]) -> Any:
        """``forward()``, one more forward of the model; when the capture explained the logits before a final
        sigmoid / softmax (``capture.head``), those logits, so that every method scores what the engine did."""
        return forward_logits(forward) if self.capture.head in SQUASHINGS else forward()

    def scores_of(self, output: Any, images: Tensor) -> Tensor:
        """The explained scores of a batch of outputs whose row ``r`` belongs to image ``images[r]``.

        With classes (None, an int or per-image targets) this is the class logit of each row's image;
        for a ``(B,)`` regression output the output itself; with a callable target, the callable's score of
        each row. ``output`` comes from :meth:`run` (the logits before a final squashing).
        """
        if self.capture.classes is not None:
            logits = logits_of(output)
            if logits is None or logits.dim() != 2:
                raise ValueError("the model's output on the perturbed batch holds no (batch, classes) logits")
            return logits.gather(1, self.capture.classes.to(logits.device)[images][:, None])[:, 0]
        if self.capture.head == REGRESSION:
            values = logits_of(output)
            if values is None or values.dim() != 1:
                raise ValueError("the model's output on the perturbed batch is not its (batch,) regression output")
            return values
        scores = self.targets(output)  # type: ignore[operator,misc]
        if scores.dim() == 2 and scores.shape[1] == 1:
            scores = scores[:, 0]
        return scores

    def probabilities_of(self, output: Any, images: Tensor) -> Tensor:
        """Probability of each row's class (Score-CAM): the softmax's, or the sigmoid's for a sigmoid head
        (multi-label); a callable target's or a regression output's raw score."""
        if self.capture.classes is None or self.capture.head == REGRESSION:
            return self.scores_of(output, images)
        logits = logits_of(output)
        if logits is None or logits.dim() != 2:
            raise ValueError("the model's output on the perturbed batch holds no (batch, classes) logits")
        if self.capture.head == SIGMOID:
            probabilities = torch.sigmoid(logits.float()).to(logits.dtype)
        else:
            probabilities = torch.softmax(logits.float(), dim=1).to(logits.dtype)
        return probabilities.gather(1, self.capture.classes.to(logits.device)[images][:, None])[:, 0]


ContextFunction = Callable[[MethodContext], Tensor]
HeadFactory = Callable[[MethodOptions, Targets], HeadFunction]
