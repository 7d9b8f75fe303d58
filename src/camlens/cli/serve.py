"""``camlens serve``: the local viewer and JSON API (the optional extra ``camlens[serve]``).

The options, and starting :func:`camlens.serve.run` on the app of :func:`camlens.serve.create_app`;
``python -m camlens.serve`` runs the same command.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from camlens.cli import common
from camlens.errors import UsageError
from camlens.serve.limits import MAX_UPLOAD_BYTES
from camlens.serve.main import DEFAULT_HOST, DEFAULT_PORT, SOURCE_EXAMPLES
from camlens.zoo.names import DEFAULT_NETWORK, SEED_NETWORKS


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "serve",
        help="explore explanations in the browser (pip install camlens[serve])",
        description="A local web page and JSON API: top classes, every method's map, opacity, colour map, layer.",
        formatter_class=common.HelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run_command)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``camlens serve``.

    The model options (``--model``, ``--device``, ``--offline``, ``--input-size``, ``--mean``, ``--std``,
    ``--labels``) are those of ``camlens explain``.

    Example:
        >>> parser = argparse.ArgumentParser(); add_arguments(parser)
        >>> parser.parse_args(["--port", "8123"]).port
        8123
    """
    parser.add_argument("--network", default=None, help=f"network shown first (default: {DEFAULT_NETWORK}, bundled)")
    parser.add_argument("--weight-path", default=None, help="state dict or checkpoint for --network/--model")
    parser.add_argument(
        "--networks",
        default=",".join(SEED_NETWORKS),
        help="comma-separated networks the page may switch to (loaded offline on first use)",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port")
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another Host name the server answers (repeatable; always: 127.0.0.1, localhost, [::1], --host)",
    )
    parser.add_argument("--topk", type=int, default=5, help="classes explained per image")
    parser.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 1e6, help="upload size limit in MB")
    parser.add_argument("--examples", default=None, metavar="DIR", help="folder of example *.jpg images to offer")
    common.add_model_options(parser)


def run_command(args: argparse.Namespace) -> int:
    """Run ``camlens serve`` from parsed :func:`add_arguments` options. Returns the exit status."""
    from camlens.run import resolve_device
    from camlens.serve.main import create_app, require_extra, run

    require_extra()
    common.check_numbers(args)
    if args.max_upload_mb <= 0:
        raise UsageError("--max-upload-mb must be positive")
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a port number (1-65535)")
    device = resolve_device(args.device)
    examples = Path(args.examples) if args.examples else SOURCE_EXAMPLES
    if args.examples and not examples.is_dir():
        raise UsageError(f"examples folder {examples} does not exist")
    network = common.network_of(args, args.network, args.weight_path)
    names = [n.strip() for n in args.networks.split(",") if n.strip()]
    try:
        app = create_app(
            network,
            names,
            device=str(device),
            examples_dir=examples,
            topk=args.topk,
            max_upload_bytes=int(args.max_upload_mb * 1e6),
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    app.state.explorer.warm_up()
    run(args.host, args.port, app, allowed=args.allowed_host)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m camlens.serve [options]``: ``camlens serve [options]``, with the command's error handling."""
    import sys

    from camlens.cli.main import main as camlens_main

    return camlens_main(["serve", *(sys.argv[1:] if argv is None else argv)])
