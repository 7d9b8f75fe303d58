"""``camlens networks``: the networks that have weights on this machine (nothing is downloaded)."""

from __future__ import annotations

import argparse
from typing import Any

from camlens.cli import common


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "networks",
        help="list the networks with weights here, offline",
        description="The networks camlens can explain with real weights on this machine, and where those come from. "
        "Any other torchvision or timm name runs with --weight-path FILE, or with --random-weights for structure.",
        formatter_class=common.HelpFormatter,
    )
    parser.add_argument("--all", action="store_true", help="also list every torchvision classifier name")
    parser.set_defaults(handler=main)
    return parser


def main(args: argparse.Namespace) -> int:
    from camlens.zoo.registry import available_offline

    for name, source in available_offline():
        print(f"{name:<28s} {source}")
    if args.all:
        from camlens.zoo import torchvision_names

        print("torchvision (with --weight-path or the torch cache): " + ", ".join(torchvision_names()))
    return 0
