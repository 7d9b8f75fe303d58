"""Errors the command line reports in one line (no traceback), the warning an explanation notes, and the
closest real names an error suggests."""

import difflib
from collections.abc import Sequence


class UsageError(ValueError):
    """Bad input from the user: a file, a name, a number. The message says what is wrong."""


class UnknownName(UsageError):
    """A name (network, layer, method) that does not exist; the message lists the closest real ones."""


class ExplanationNote(UserWarning):
    """What ``explain`` found legal but suspicious (a map that shows nothing, an assumed layout, a guided map
    with no activation routed). Each is also kept on the result (``warnings``, ``image_warnings``); the
    command line prints them under the image they concern instead of as Python warnings."""


class MissingWeights(UsageError):
    """A network whose weights are not on this machine. The message says whether a download was tried and
    what to do; :meth:`advice` words it for a command's own flag (``compare`` takes ``--weights NAME=FILE``)."""

    def __init__(
        self, network: str, checkpoint: str | None = None, folder: str | None = None, download_error: str | None = None
    ) -> None:
        self.network, self.checkpoint, self.folder, self.download_error = network, checkpoint, folder, download_error
        super().__init__(self.advice())

    def advice(self, flag: str = "--weight-path FILE") -> str:
        if self.download_error is not None:
            head = f"no weights for {self.network}: the download failed ({self.download_error})"
        elif self.checkpoint is None:
            head = f"no weights for {self.network} found (nothing is downloaded for it)"
        else:
            head = f"no weights for {self.network} found here (no download tried: offline)"
        put = f", or put {self.checkpoint} in {self.folder}" if self.checkpoint and self.folder else ""
        return f"{head}; pass {flag}{put}, or --random-weights for a structure check"


def check_names(
    asked: Sequence[str] | str, known: Sequence[str], *, what: str = "method", where: str = ""
) -> list[str]:
    """The names asked for, once each in their order, or a ValueError naming an unknown one, ``where`` it is
    unknown, the known names and the closest ones (``what`` names the kind: "method", "detection method")."""
    names = list(dict.fromkeys([asked] if isinstance(asked, str) else asked))
    known = list(known)
    for name in names:
        if name not in known:
            raise ValueError(
                f"unknown {what} {name!r}{where}; known: {', '.join(known)} "
                f"(closest: {', '.join(closest_names(name, known, 2))})"
            )
    if not names:
        raise ValueError(f"methods is empty; pick from {', '.join(known)}")
    return names


def closest_names(name: str, names: list[str], n: int = 5) -> list[str]:
    """The names most like ``name``, best first (never empty when ``names`` is not)."""
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    if not close:
        close = difflib.get_close_matches(name, names, n=n, cutoff=0.0)
    return close
