"""``camlens evaluate``: methods x metrics over images, with a mean and 95% interval, curves and the
sanity-check panel. Parses and prints; the work is :func:`camlens.metrics.evaluate` and
:func:`camlens.metrics.sanity_check`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from camlens.cli import common

DEFAULT_METRICS = ("deletion", "insertion", "average_drop", "increase_in_confidence")
DEFAULT_METHODS = ("gradcam", "gradcam++", "guided_backprop")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "evaluate",
        help="how faithful is each map? methods x metrics over images, with 95%% intervals and curves",
        description="Evaluate methods with faithfulness, localisation and sanity metrics over images.",
        formatter_class=common.HelpFormatter,
    )
    common.add_images(parser)
    parser.add_argument("--network", default=None, help="torchvision or timm name (default: efficientnet_lite0)")
    parser.add_argument("--weight-path", default=None, help="state dict or checkpoint for the network")
    parser.add_argument(
        "--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="METHOD", help="methods to evaluate"
    )
    parser.add_argument(
        "--metrics", nargs="+", default=list(DEFAULT_METRICS), metavar="METRIC",
        help="metrics ('camlens evaluate --list-metrics' lists them)",
    )  # fmt: skip
    parser.add_argument("--list-metrics", action="store_true", help="list the metrics and exit")
    parser.add_argument("--layer-name", default=None, help="target layer of the CAM methods (default: automatic)")
    parser.add_argument("--class-id", type=int, default=None, help="class to explain (default: the predicted one)")
    parser.add_argument("--steps", type=int, default=50, help="steps of the deletion and insertion curves")
    parser.add_argument(
        "--boxes", default=None, metavar="FILE.json",
        help="object boxes for the pointing games: {\"image.jpg\": [[x0, y0, x1, y1], ...]} in image pixels",
    )  # fmt: skip
    parser.add_argument(
        "--sanity", choices=("cascading", "independent"), default=None, help="also run the model-randomisation check"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch")
    parser.add_argument("--output-dir", default="evaluation", help="where the tables and plots go")
    parser.add_argument("--overwrite", action="store_true", help="replace files that exist already")
    from camlens.cli.explain import add_progress_option

    add_progress_option(parser)
    common.add_model_options(parser)
    parser.set_defaults(handler=main)
    return parser


def _boxes(path: str | None, paths: list[Path]) -> list[list[list[float]]] | None:
    from camlens.errors import UsageError

    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"boxes file {path} cannot be read as JSON ({error})") from None
    if not isinstance(data, dict):
        raise UsageError(f"boxes file {path} must hold an object {{image name: [[x0, y0, x1, y1], ...]}}")
    boxes = []
    for p in paths:
        entry = data.get(p.name, data.get(p.stem, data.get(str(p))))
        if entry is None:
            raise UsageError(f"boxes file {path} has no boxes for {p.name}")
        if not all(isinstance(b, list) and len(b) == 4 for b in entry):
            raise UsageError(f"boxes for {p.name} must be [[x0, y0, x1, y1], ...]")
        boxes.append(entry)
    return boxes


def main(args: argparse.Namespace) -> int:
    from camlens.errors import UsageError

    if args.list_metrics:
        from camlens.metrics import METRICS

        for name, spec in METRICS.items():
            print(f"{name:<24s} {'higher' if spec.higher_is_better else 'lower'} is better")
        return 0
    methods = common.methods_of(args)
    if args.steps < 2:
        raise UsageError("--steps must be at least 2")
    common.check_numbers(args)
    common.metrics_of(args, masks=True)
    from camlens.metrics import METRICS
    from camlens.run import check_layer, check_output_dir, collect_sources, resolve_device

    out = check_output_dir(args.output_dir)
    if not args.overwrite and (out / "evaluation.md").exists():
        raise UsageError(f"{out / 'evaluation.md'} exists already: pass --overwrite, or choose another --output-dir")
    device = resolve_device(args.device)
    paths = collect_sources(common.images_of(args))
    boxes = _boxes(args.boxes, paths)
    if boxes is None and any(METRICS[m].kind == "mask" for m in args.metrics):
        raise UsageError("the pointing games need object boxes: pass --boxes FILE.json")
    network = common.network_of(args, args.network, args.weight_path)
    check_layer(network, args.layer_name)
    network.model.to(device)
    from camlens.cli.explain import progress_of
    from camlens.progress import reporting

    with reporting(progress_of(args)):
        rows, curves, sanity_rows, sanity_maps = _evaluate(network, paths, boxes, methods, args, device)
    from camlens.run import write_staged

    files = write_staged(out, lambda folder: _write(folder, rows, curves, sanity_rows, sanity_maps))
    print(f"[{network.name}, weights: {network.weights}] {len(paths)} image{'s' * (len(paths) != 1)}")
    print((out / "evaluation.md").read_text(encoding="utf-8").rstrip())
    print(f"wrote {', '.join(files)} to {out}/")
    sys.stdout.flush()
    return 0


Rows = list[dict[str, Any]]


def _evaluate(
    network: Any, paths: list[Path], boxes: Any, methods: tuple[str, ...], args: argparse.Namespace, device: Any
) -> tuple[Rows, dict[str, dict[str, Any]], Rows, Any]:
    import torch

    from camlens.images import read_image, to_batch
    from camlens.metrics import boxes_to_masks, evaluate, sanity_check

    options = {"deletion": {"steps": args.steps}, "insertion": {"steps": args.steps}}
    rows: list[dict[str, Any]] = []
    curves: dict[str, dict[str, list[Any]]] = {}
    sanity_rows: list[dict[str, Any]] = []
    sanity_maps = None
    size = network.input_size
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start : start + args.batch_size]
        rgbs = [read_image(p) for p in chunk]
        x = to_batch(rgbs, size, network.mean, network.std).to(device)
        masks = None
        if boxes is not None:
            scaled = []
            for rgb, image_boxes in zip(rgbs, boxes[start : start + len(chunk)], strict=True):
                sy, sx = size[0] / rgb.shape[0], size[1] / rgb.shape[1]
                scaled.append([(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in image_boxes])
            masks = boxes_to_masks(scaled, size).to(device)
        batch_rows = evaluate(
            network.model, x, list(methods), list(args.metrics), args.class_id, masks,
            target_layer=args.layer_name, options=options, keep_results=True,
        )  # fmt: skip
        for row in batch_rows:
            result = row.pop("result")
            row["image"] = str(chunk[row["image"]])
            if result.curve is not None and row["metric"] in ("deletion", "insertion"):
                store = curves.setdefault(row["metric"], {}).setdefault(row["method"], [])
                if not store or store[-1] is not result:
                    store.append(result)
        rows += batch_rows
        if args.sanity:
            checked = sanity_check(
                network.model, x, list(methods), args.class_id, args.sanity, target_layer=args.layer_name,
                keep_maps=start == 0,
            )  # fmt: skip
            for row in checked:
                row["image"] = str(chunk[row["image"]])
            sanity_rows += list(checked)
            if start == 0:
                sanity_maps = checked.maps
    merged: dict[str, dict[str, Any]] = {}
    for metric, by_method in curves.items():
        merged[metric] = {}
        for method, results in by_method.items():
            first = results[0]
            merged[metric][method] = type(first)(
                values=torch.cat([r.values for r in results]),
                higher_is_better=first.higher_is_better,
                curve=torch.cat([r.curve for r in results]),
                fractions=first.fractions,
            )
    return rows, merged, sanity_rows, sanity_maps


def _write(folder: Path, rows: list[dict[str, Any]], curves: dict[str, dict[str, Any]],
           sanity_rows: list[dict[str, Any]], sanity_maps: Any) -> list[str]:  # fmt: skip
    import csv

    from camlens.metrics import plot_curves, plot_sanity, summarise, to_markdown

    summary = summarise(rows)
    table = to_markdown(summary)
    (folder / "evaluation.md").write_text(table + "\n", encoding="utf-8")
    (folder / "evaluation.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1), encoding="utf-8")
    with open(folder / "evaluation.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["method", "metric", "image", "value", "higher_is_better"])
        writer.writeheader()
        writer.writerows(rows)
    files = ["evaluation.md", "evaluation.json", "evaluation.csv"]
    for metric, results in curves.items():
        figure = plot_curves(results, title=f"{metric} (mean over images)")
        figure.savefig(folder / f"{metric}-curves.png", dpi=110)
        files.append(f"{metric}-curves.png")
    if sanity_rows:
        with open(folder / "sanity.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, list(sanity_rows[0]))
            writer.writeheader()
            writer.writerows(sanity_rows)
        files.append("sanity.csv")
        if sanity_maps is not None:
            plot_sanity(sanity_maps).savefig(folder / "sanity.png", dpi=110)
            files.append("sanity.png")
    return files
