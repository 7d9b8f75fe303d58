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
from collections.abc import Sequence
from typing import Any

from camlens.cli import common
from camlens.cli import compare as compare_command
from camlens.cli import explain as explain_command
from camlens.errors import UsageError

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

    for name in ("methods", "networks", "evaluate", "serve"):
        try:
            module = importlib.import_module(f"camlens.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"camlens.cli.{name}":
                raise
            continue
        module.add_parser(sub)


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise Terminated()


_interrupted: list[bool] = [False]  # Ctrl-C was pressed during this run
_pending: list[bool] = [False]  # ... inside an import, not raised yet


def _importing(frame: Any) -> bool:
    """Whether ``frame`` runs inside an import (a module's top-level code, or the import machinery)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _on_sigint(_signum: int, frame: Any) -> None:
    """Ctrl-C: remembered, and raised as ``KeyboardInterrupt`` -- but never inside an import. An extension
    module interrupted half-way through its initialisation cannot be imported again (numpy: "cannot load
    module more than once per process") or aborts the process, so during an import the interrupt waits,
    re-checked every 50 ms, until the import is done."""
    _interrupted[0] = True
    if _importing(frame) and hasattr(signal, "setitimer"):
        _pending[0] = True
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        return
    raise KeyboardInterrupt


def _on_alarm(_signum: int, frame: Any) -> None:
    if not _pending[0]:
        return
    if _importing(frame):
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        return
    _pending[0] = False
    raise KeyboardInterrupt


def _message(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:400] if text else type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``camlens`` command. Returns the exit status."""
    _interrupted[0] = _pending[0] = False
    handlers = {signal.SIGTERM: _on_sigterm, signal.SIGINT: _on_sigint}
    if hasattr(signal, "SIGALRM"):
        handlers[signal.SIGALRM] = _on_alarm
    try:
        previous = {number: signal.signal(number, handler) for number, handler in handlers.items()}
    except ValueError:  # not the main thread
        previous = {}
    try:
        args = build_parser().parse_args(argv)
        status = int(args.handler(args))
        return _interrupted_status() if _interrupted[0] else status
    except UsageError as error:
        if _interrupted[0]:
            return _interrupted_status()
        print(f"camlens: error: {_message(error)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return _interrupted_status()
    except Terminated:
        print("camlens: terminated", file=sys.stderr)
        return 143
    except OSError as error:  # disk full, name too long, ...: name the file and the reason
        if _interrupted[0]:
            return _interrupted_status()
        if os.environ.get("CAMLENS_DEBUG"):
            raise
        where = f" ({error.filename})" if error.filename else ""
        reason = error.strerror or _message(error)
        status = 1 if error.errno in (errno.ENOSPC, errno.EIO, errno.ENOMEM) else 2
        print(f"camlens: error: {reason}{where}", file=sys.stderr)
        return status
    except Exception as error:  # noqa: BLE001 - one line, never a traceback (CAMLENS_DEBUG=1 shows it)
        if _interrupted[0]:
            return _interrupted_status()
        if os.environ.get("CAMLENS_DEBUG"):
            raise
        print(f"camlens: error: {type(error).__name__}: {_message(error)}", file=sys.stderr)
        return 1
    finally:
        _pending[0] = False
        if previous and hasattr(signal, "setitimer"):
            signal.setitimer(signal.ITIMER_REAL, 0)  # no re-check alarm outlives the run
        for number, handler in previous.items():
            signal.signal(number, handler)


def _interrupted_status() -> int:
    print("camlens: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
