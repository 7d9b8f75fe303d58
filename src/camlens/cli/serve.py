"""``camlens serve``: the local viewer and JSON API (the optional extra ``camlens[serve]``)."""

from __future__ import annotations

import argparse
from typing import Any

from camlens.cli import common


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from camlens.serve import add_arguments

    parser = sub.add_parser(
        "serve",
        help="explore explanations in the browser (pip install camlens[serve])",
        description="A local web page and JSON API: top classes, every method's map, opacity, colour map, layer.",
        formatter_class=common.HelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=main)
    return parser


def main(args: argparse.Namespace) -> int:
    from camlens.serve import cli_main

    return cli_main(args)
