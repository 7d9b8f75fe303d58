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


def _message(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:400] if text else type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``camlens`` command. Returns the exit status."""
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        previous = None
    try:
        args = build_parser().parse_args(argv)
        return int(args.handler(args))
    except UsageError as error:
        print(f"camlens: error: {_message(error)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("camlens: interrupted", file=sys.stderr)
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
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
