"""``camlens networks``: the networks that have weights on this machine (nothing is downloaded)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from camlens.cli import common


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "networks",
        help="list the networks with weights here, offline",
        description="The networks camlens can explain with real weights on this machine, and where those come from. "
        "Any other torchvision or timm name runs with its weights file (explain --weight-path FILE, compare "
        "--weights NAME=FILE), or with --random-weights for a structure check. Nothing is downloaded.",
        formatter_class=common.HelpFormatter,
    )
    parser.add_argument(
        "--all", action="store_true", help="also list every torchvision classifier and timm model name (slower)"
    )
    parser.set_defaults(handler=main)
    return parser


def _checkpoint_folder() -> Path:
    """torch.hub's checkpoint folder, found as ``torch.hub.get_dir`` finds it, without importing torch."""
    home = os.environ.get("TORCH_HOME")
    if not home:
        home = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def with_weights() -> list[tuple[str, str]]:
    """``(name, source)`` of the networks with weights here. torchvision is imported only when the torch
    cache holds a checkpoint (to match files to names); otherwise this is torch-free and instant."""
    folder = _checkpoint_folder()
    if folder.is_dir() and any(folder.iterdir()):
        from camlens.zoo.registry import available_offline

        return available_offline()
    from importlib.util import find_spec

    from camlens.zoo.registry import BUNDLED_NETWORKS

    return [
        (name, f"bundled ({package})")
        for name, package in BUNDLED_NETWORKS.items()
        if find_spec(package.replace("-", "_")) is not None
    ]


def main(args: argparse.Namespace) -> int:
    found = with_weights()
    print(f"{'network':<28s} weights")
    for name, source in found:
        print(f"{name:<28s} {source}")
    print(f"({len(found)} with weights here; torch cache: {_checkpoint_folder()})")
    if not args.all:
        print(
            "Any torchvision classifier or timm model also runs with a weights file or --random-weights; "
            "'camlens networks --all' lists their names."
        )
        return 0
    import timm

    from camlens.zoo import torchvision_names

    tv = torchvision_names()
    print(f"torchvision, {len(tv)} (weights from --weight-path, the torch cache, or --random-weights):")
    print("  " + ", ".join(tv))
    names = timm.list_models()
    print(f"timm, {len(names)} (weights from --weight-path, or --random-weights):")
    print("  " + ", ".join(names))
    return 0
