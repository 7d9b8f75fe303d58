"""The ``camlens`` command: builds the parser from one small module per command and turns every failure
into one line. Nothing heavy is imported before a command runs: ``camlens --help`` and usage errors never
import torch.

Exit status: 0 success; 2 bad usage or bad input (a file, a name, a number, weights that do not fit, an
output folder that cannot be written), also when some images of a run were bad; 1 a runtime fault (out of
memory, a disk that fills, a model that raises); 130 interrupted (Ctrl-C) and 143 terminated (SIGTERM),
after cleaning up like any error.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from camlens.cli import common
from camlens.cli import compare as compare_command
from camlens.cli import explain as explain_command
from camlens.errors import ExplanationNote, UsageError

COMMANDS = [explain_command, compare_command]


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that ``finally`` blocks clean up as for any error."""


def _version() -> str:
    from camlens import __version__

    return f"camlens {__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camlens",
        description="Why did the vision model predict that? CAM methods, guided backprop and reports, offline.",
        formatter_class=common.HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub: argparse._SubParsersAction) -> None:
    import importlib

    for name in ("methods", "networks", "evaluate", "serve", "segment", "detect"):
        try:
            module = importlib.import_module(f"camlens.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"camlens.cli.{name}":
                raise
            continue
        module.add_parser(sub)


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise Terminated()


def _importing(frame: Any) -> bool:
    """Whether ``frame`` runs inside an import (a module's top-level code, or the import machinery)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


_NOTHING = object()


class _CtrlC:
    """Ctrl-C during one run of the command (main thread only): remembered, and raised as
    ``KeyboardInterrupt``, but not inside an import. An extension module interrupted half-way through its
    initialisation cannot be imported again (numpy: "cannot load module more than once per process") or
    aborts the process, so during an import the first Ctrl-C waits, re-checked every 50 ms with SIGALRM
    (system calls restarted, not interrupted), until the import is done. A second Ctrl-C raises at once.
    """

    def __init__(self) -> None:
        self.pressed = False
        self._alarm: Any = _NOTHING  # the SIGALRM handler to put back while a re-check is armed

    def on_sigint(self, _signum: int, frame: Any) -> None:
        deferrable = hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM")
        if self.pressed or self._alarm is not _NOTHING or not deferrable or not _importing(frame):
            self.disarm()
            self.pressed = True
            raise KeyboardInterrupt
        self.pressed = True
        self._alarm = signal.signal(signal.SIGALRM, self._on_alarm)
        if hasattr(signal, "siginterrupt"):
            signal.siginterrupt(signal.SIGALRM, False)
        signal.setitimer(signal.ITIMER_REAL, 0.05)

    def _on_alarm(self, _signum: int, frame: Any) -> None:
        if _importing(frame):
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return
        self.disarm()
        raise KeyboardInterrupt

    def disarm(self) -> None:
        """Stop the re-check, if one is armed, and give SIGALRM back."""
        if self._alarm is not _NOTHING:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._alarm)
            self._alarm = _NOTHING


def _message(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:400] if text else type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``camlens`` command. Returns the exit status."""
    ctrl_c = _CtrlC()
    previous: dict[int, Any] = {}
    try:
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, _on_sigterm)
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # started with Ctrl-C ignored: keep it so
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, ctrl_c.on_sigint)
    except ValueError:  # not the main thread: no handlers, the caller's own
        pass
    try:
        try:
            args = build_parser().parse_args(argv)
            with warnings.catch_warnings():  # the command prints each image's notes under the image itself
                warnings.simplefilter("ignore", ExplanationNote)
                status = int(args.handler(args))
        except (Exception, SystemExit) as error:
            if ctrl_c.pressed and not isinstance(error, BrokenPipeError):
                raise KeyboardInterrupt from None  # whatever failed after a Ctrl-C, the run was interrupted
            raise
        finally:
            ctrl_c.disarm()  # a deferred Ctrl-C still waiting is not raised inside the error handling below
        if ctrl_c.pressed:
            raise KeyboardInterrupt
        return status
    except UsageError as error:
        print(f"camlens: error: {_message(error)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as error:  # a command may say what was done (a folder run: how to resume)
        print(f"camlens: interrupted{f': {error}' if str(error) else ''}", file=sys.stderr)
        return 130
    except Terminated:
        print("camlens: terminated", file=sys.stderr)
        return 143
    except OSError as error:  # disk full, name too long, ...: name the file and the reason
        if os.environ.get("CAMLENS_DEBUG"):
            raise
        where = f" ({error.filename})" if error.filename else ""
        reason = error.strerror or _message(error)
        status = 1 if error.errno in (errno.ENOSPC, errno.EIO, errno.ENOMEM) else 2
        print(f"camlens: error: {reason}{where}", file=sys.stderr)
        return status
    except Exception as error:  # noqa: BLE001 - one line, never a traceback (CAMLENS_DEBUG=1 shows it)
        if os.environ.get("CAMLENS_DEBUG"):
            raise
        print(f"camlens: error: {type(error).__name__}: {_message(error)}", file=sys.stderr)
        return 1
    finally:
        ctrl_c.disarm()
        for number, handler in previous.items():
            signal.signal(number, handler)


if __name__ == "__main__":
    sys.exit(main())
