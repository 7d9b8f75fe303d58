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

:func:`camlens.cost` says beforehand how many forward passes each method takes, e.g.
``scorecam: 2048 forward passes (2048 channels of 'layer4' x 1 image), 32 at a time``
(:mod:`camlens.costs`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
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
