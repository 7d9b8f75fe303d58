"""``camlens compare``: parse, call :func:`camlens.run.compare`, print."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from camlens.cli import common


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "compare",
        help="several networks side by side: a comparison table per image (PNG, HTML, Markdown)",
        description="Explain each image with several networks; one table per image, and an index page.",
        formatter_class=common.HelpFormatter,
    )
    common.add_images(parser)
    parser.add_argument(
        "--networks", required=True, help="comma-separated names, e.g. efficientnet_lite0,resnet50,densenet121"
    )
    parser.add_argument(
        "--weights", action="append", default=[], metavar="NETWORK=FILE", help="weights for one network"
    )
    common.add_explain_options(parser, per_network_layer=True)
    common.add_picture_options(parser)
    parser.add_argument(
        "--plain", action="store_true", help="pictures without their caption (class, method) and colour bar"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    common.add_metrics_option(parser)
    common.add_model_options(parser)
    parser.set_defaults(handler=main)
    return parser


def _pairs(items: list[str], flag: str, allow_bare: bool) -> dict[str, str]:
    from camlens.errors import UsageError

    pairs: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            if not allow_bare:
                raise UsageError(f"{flag} takes NETWORK=VALUE, got {item!r}")
            name, value = "", item
        pairs[name.strip()] = value.strip()
    return pairs


def main(args: argparse.Namespace) -> int:
    from camlens.errors import UsageError
    from camlens.run import RunOptions, compare, resolve_device

    common.check_numbers(args)
    methods = common.methods_of(args)
    metrics = common.metrics_of(args)
    resolve_device(args.device)
    sources = common.images_of(args)
    names = [n.strip() for n in args.networks.split(",") if n.strip()]
    if not names:
        raise UsageError("--networks is empty")
    weights = _pairs(args.weights, "--weights", allow_bare=False)
    layers = _pairs(args.layer_name, "--layer-name", allow_bare=True)
    options = RunOptions(
        methods=methods,
        class_id=args.class_id,
        topk=args.topk,
        batch_size=args.batch_size,
        device=args.device,
        image_format=args.format,
        annotate=not args.plain,
        overwrite=args.overwrite,
        metrics=metrics,
        metric_steps=args.metric_steps,
    )

    def load(name: str) -> Any:
        from camlens.errors import MissingWeights

        try:
            return common.network_of(args, name, weights.get(name))
        except MissingWeights as error:  # compare's flag is --weights NAME=FILE, not explain's --weight-path
            raise UsageError(error.advice(f"--weights {name}=FILE")) from None

    summary = compare(names, sources, args.output_dir, load, options, layers=layers)
    for table in summary.tables:
        if len(summary.tables) > 1:
            print(f"{table.stem}:")
        for row in table.rows:
            if row.pictures is None:
                print(f"{row.name:<22s} unavailable: {summary.unavailable.get(row.name, row.prediction)}")
                continue
            explained = f"  explained {row.explained}" if row.explained else ""
            print(f"{row.name:<22s} {row.prediction}{explained}  [layer {row.layer}]")
            for key, value in row.metrics.items():
                print(f"{'':<22s}   {key} {value:.3f}")
    stems = [t.stem for t in summary.tables]
    pages = f"{stems[0]}-compare.png, .html, .md" if len(stems) == 1 else "index.html and one table per image"
    print(f"wrote {len(summary.files)} files to {summary.output_dir}/ ({pages})")
    s = summary.timings
    total = sum(s.values()) or 1.0
    print(
        f"time: models {s['load'] + s['model']:.2f} s (loading {s['load']:.2f} s, explaining {s['model']:.2f} s), "
        f"images and pictures {s['io']:.2f} s ({100 * s['io'] / total:.0f}%)"
    )
    sys.stdout.flush()
    return 0
