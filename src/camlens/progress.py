"""Progress of long computations, and what the perturbation methods cost before they start.

Perturbation methods run the model once per channel (or per channel and sample, or per patch), so one
``explain`` call can take minutes on a CPU. Pass ``progress=`` to :func:`camlens.explain` or
:func:`camlens.metrics.sanity_check`:

* ``None`` (default): whatever an enclosing :func:`reporting` block set, else nothing;
* ``False``: nothing; ``True``: a tqdm bar per method on stderr (with the time left), and a one-line
  note of each perturbation method's cost before it starts;
* a callable ``(label, done, total) -> None``: called with ``done = 0`` at the start of each counted
  computation and after each chunk, ``done`` increasing up to ``total``; ``label`` is the method name
  (``"scorecam"``) or ``"sanity check (cascading)"``. It receives no notes;
* a :class:`Progress` (subclass it to receive the notes too).

:func:`cost` says beforehand how many forward passes each method takes, e.g.
``scorecam: 2048 forward passes (2048 channels of 'layer4' x 1 image), 32 at a time``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


class Progress:
    """Receives the progress of long computations; the base class ignores everything."""

    def note(self, text: str) -> None:
        """A one-line note, e.g. what a method will cost, before it starts."""

    def update(self, label: str, done: int, total: int) -> None:
        """``done`` of ``total`` units of ``label`` are done (0 at the start)."""


class _Callback(Progress):
    def __init__(self, function: Callable[[str, int, int], Any]) -> None:
        self.function = function

    def update(self, label: str, done: int, total: int) -> None:
        self.function(label, done, total)


class TqdmProgress(Progress):
    """tqdm bars on ``stream`` (default stderr), one per label, with the rate and the time left; notes are
    printed once each (above the bars). ``bars=False`` prints the notes only."""

    def __init__(self, stream: Any = None, bars: bool = True) -> None:
        self.stream = stream
        self.bars = bars
        self._bars: dict[str, Any] = {}
        self._noted: set[str] = set()

    def _file(self) -> Any:
        return self.stream if self.stream is not None else sys.stderr

    def note(self, text: str) -> None:
        if text in self._noted:
            return
        self._noted.add(text)
        if self._bars:
            from tqdm import tqdm

            tqdm.write(f"camlens: {text}", file=self._file())
        else:
            print(f"camlens: {text}", file=self._file(), flush=True)

    def update(self, label: str, done: int, total: int) -> None:
        if not self.bars:
            return
        bar = self._bars.get(label)
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            from tqdm import tqdm

            bar = self._bars[label] = tqdm(
                total=total, desc=label, unit="pass" if not label.startswith("sanity") else "step",
                file=self._file(), leave=True, smoothing=0.1, mininterval=0.5, dynamic_ncols=True,
            )  # fmt: skip
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            del self._bars[label]


_CURRENT: ContextVar[Progress | None] = ContextVar("camlens_progress", default=None)


def as_progress(spec: Any) -> Progress | None:
    """``True`` -> :class:`TqdmProgress`, ``False``/None -> None, a callable -> a :class:`Progress` calling it."""
    if spec is None or spec is False:
        return None
    if spec is True:
        return TqdmProgress()
    if isinstance(spec, Progress):
        return spec
    if callable(spec):
        return _Callback(spec)
    raise TypeError(f"progress must be True, False, None, a callable (label, done, total) or a Progress, not {spec!r}")


@contextlib.contextmanager
def reporting(spec: Any) -> Iterator[Progress | None]:
    """Report the progress of everything run inside the block to ``spec`` (see the module's docstring)."""
    reporter = as_progress(spec)
    token = _CURRENT.set(reporter)
    try:
        yield reporter
    finally:
        _CURRENT.reset(token)


def current() -> Progress | None:
    """The reporter of the enclosing :func:`reporting` block (None: no progress wanted)."""
    return _CURRENT.get()


class Counter:
    """Counts the units of one computation for the current reporter (a no-op when there is none)."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = int(total)
        self.done = 0
        self.reporter = current()
        if self.reporter is not None:
            self.reporter.update(label, 0, self.total)

    def advance(self, count: int = 1) -> None:
        self.done += int(count)
        if self.reporter is not None:
            self.reporter.update(self.label, self.done, self.total)


def note(text: str) -> None:
    """Pass a note to the current reporter."""
    reporter = current()
    if reporter is not None:
        reporter.note(text)


@dataclass(frozen=True)
class Cost:
    """What one method costs on one batch: ``forward_passes`` single-image passes of the model (of the
    part after the target layer for Ablation-CAM), ``backward`` when each also needs a backward pass;
    ``note`` says it in one line."""

    method: str
    forward_passes: int
    backward: bool
    note: str


def _images(count: int) -> str:
    return f"{count} image{'s' * (count != 1)}"


def method_cost(
    name: str, channels: int, images: int, layer: str | None, size: Sequence[int], options: Any
) -> Cost | None:
    """The cost of perturbation method ``name`` with ``channels`` channels at ``layer``, ``images`` images of
    input ``size`` (H, W) and :class:`~camlens.methods.context.MethodOptions` ``options``; None for the
    methods that cost one forward and backward pass (the CAM methods, guided backprop, ...).

    Constant channels are skipped by Score-CAM and all-zero channels by Ablation-CAM, so those two may run
    fewer passes than stated.
    """
    at = f"{channels} channels of {layer!r}"
    chunk = f"{options.batch_size} at a time"
    if name in ("scorecam", "ablationcam"):
        total = channels * images
        what = "forward passes" if name == "scorecam" else "passes of the network after the layer"
        return Cost(name, total, False, f"{name}: {total} {what} ({at} x {_images(images)}), {chunk}")
    if name in ("sscam", "iscam"):
        samples = options.num_samples or (35 if name == "sscam" else 10)
        total = channels * samples * images
        text = f"{name}: {total} forward passes ({at} x {samples} samples x {_images(images)}), {chunk}"
        return Cost(name, total, False, text)
    if name == "smoothgradcam++":
        samples = options.num_samples or 4
        total = samples * images
        return Cost(name, total, True, f"{name}: {total} forward and backward passes ({samples} noisy copies x "
                    f"{_images(images)})")  # fmt: skip
    if name == "sess":
        from camlens.methods.sess import patch_count

        scales = options.num_samples or 12
        patches = patch_count(int(size[0]), int(size[1]), scales)
        total = patches * images
        return Cost(name, total, True, f"{name}: {total} forward and backward passes ({patches} patches over "
                    f"{scales} scales x {_images(images)}), {chunk}")  # fmt: skip
    return None


def cost(model: Any, x: Any, methods: Sequence[str] | str, target_layer: Any = None, **options: Any) -> dict[str, Cost]:
    """What each perturbation method among ``methods`` will cost on ``x`` (one forward and backward pass to
    find the target layer's channels); the other methods are left out (they cost one pass together).

    ``options`` are those of :func:`camlens.explain` (``batch_size``, ``num_samples``, ``layout``, ...).

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> cost(model, torch.rand(1, 3, 64, 64), ["gradcam", "scorecam"])["scorecam"].note
        "scorecam: 512 forward passes (512 channels of 'layer4' x 1 image), 32 at a time"
    """
    from camlens.explain import _check_methods, _method_options, explain

    names = _check_methods(methods)
    layout = options.pop("layout", None)
    method_options = _method_options(options)
    wanted = [n for n in names if n in ("scorecam", "ablationcam", "sscam", "iscam", "smoothgradcam++", "sess")]
    if not wanted:
        return {}
    result = explain(model, x, ["gradcam"], target_layer, layout=layout, progress=False)
    assert result.capture is not None and result.capture.activations is not None
    channels = int(result.capture.activations.shape[1])
    out = {}
    for name in wanted:
        found = method_cost(name, channels, int(x.shape[0]), result.target_layer, x.shape[-2:], method_options)
        if found is not None:
            out[name] = found
    return out
