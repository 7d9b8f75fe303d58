"""``camlens methods``: the built-in method names, their family, whether they read a target layer, and their
title. No torch import: the table is the catalog's (:data:`camlens.catalog.ROWS`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from camlens.cli import common
from camlens.names import SEED_METHODS, VIT_ONLY_METHODS

_VIT_ONLY = ", ".join(VIT_ONLY_METHODS)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "methods",
        help="list the explanation methods (names for --methods)",
        description="Every built-in method name that --methods accepts, with its family, whether it reads a "
        f"target layer (--layer-name), and what it is. 'all' runs every one but {_VIT_ONLY} "
        "(vision transformers only: name it).",
        formatter_class=common.HelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="one JSON list instead of the table")
    parser.add_argument("--markdown", action="store_true", help="the Markdown table of docs/guide/methods.md")
    parser.set_defaults(handler=main)
    return parser


def rows() -> list[dict[str, Any]]:
    from camlens.catalog import ROWS

    return [
        {"name": row.name, "family": row.family, "uses_layer": row.uses_layer, "title": row.description,
         "default": row.seed}
        for row in ROWS
    ]  # fmt: skip


def main(args: argparse.Namespace) -> int:
    if args.markdown:
        from camlens.catalog import markdown_table

        print(markdown_table(), end="")
        return 0
    table = rows()
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"{'name':<24s} {'family':<21s} {'layer':<6s} title")
    for row in table:
        mark = " (default)" if row["default"] else ""
        print(
            f"{row['name']:<24s} {row['family']:<21s} {'yes' if row['uses_layer'] else 'no':<6s} {row['title']}{mark}"
        )
    print(
        f"{len(table)} methods; the default runs the {len(SEED_METHODS)} marked; '--methods all' runs every one but "
        f"{_VIT_ONLY} (name it)"
    )
    return 0
