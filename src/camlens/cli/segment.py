"""``camlens segment``: explain every class a segmentation model predicts, through :func:`camlens.run.run` with
the segmentation task (:class:`camlens.pipeline.targets.Segmentation`). :func:`run_targets` also runs
``camlens explain --text`` (:class:`camlens.pipeline.targets.TextPrompts`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from camlens.cli import common


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "segment",
        help="explain every class of a semantic segmentation model (files or folders)",
        description="Explain a segmentation model's classes: the predicted mask with a legend, one picture per "
        "class and method (Seg-Grad-CAM's score: the class's logit summed over its predicted pixels), and tables "
        "(results.jsonl per image, classes.csv per image and class with its pixel share).",
        formatter_class=common.HelpFormatter,
    )
    common.add_images(parser)
    parser.add_argument(
        "--network",
        default=None,
        help="torchvision segmenter: deeplabv3_resnet50, deeplabv3_resnet101, deeplabv3_mobilenet_v3_large, "
        "fcn_resnet50, fcn_resnet101, lraspp_mobilenet_v3_large (or --model)",
    )
    parser.add_argument("--weight-path", default=None, help="state dict or checkpoint for the network")
    group = parser.add_argument_group("explanation")
    group.add_argument(
        "--methods", nargs="+", default=["gradcam"], metavar="METHOD",
        help="CAM methods ((activations, gradients) weightings: gradcam, gradcam++, layercam, hirescam ...)",
    )  # fmt: skip
    group.add_argument(
        "--classes", nargs="+", type=int, default=None, metavar="ID",
        help="class ids to explain (default: those predicted in each image)",
    )  # fmt: skip
    group.add_argument("--layer-name", default=None, help="dotted layer name (default: the family's, never the logits)")
    common.add_picture_options(parser)
    add_run_options(parser)
    common.add_model_options(parser)
    parser.set_defaults(handler=main)
    return parser


def add_run_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run")
    group.add_argument("--annotate", action="store_true", help="caption pictures: target, method, colour bar")
    group.add_argument("--colormap", default="jet", help="jet, viridis, inferno, magma, turbo or gray")
    group.add_argument("--save-maps", action="store_true", help="also write <image>-<network>-maps.npz (compact)")
    group.add_argument(
        "--no-pictures", action="store_true", help="write only the maps (compact, one file per batch) and the tables"
    )
    group.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    group.add_argument("--fail-fast", action="store_true", help="stop at the first bad image")
    group.add_argument(
        "--recursive", action="store_true", help="search the folders' sub-folders too (default: the folder's own files)"
    )
    group.add_argument(
        "--no-resume", action="store_true", help="redo images the output folder's results table holds already"
    )


def main(args: argparse.Namespace) -> int:
    from camlens.errors import UsageError
    from camlens.names import CAM_METHODS

    if args.network is None and args.model is None:
        raise UsageError("camlens segment needs --network NAME (a torchvision segmenter) or --model FILE.py:FACTORY")
    methods = tuple(dict.fromkeys(args.methods))
    for name in methods:
        if name not in CAM_METHODS:
            import difflib

            close = difflib.get_close_matches(name, CAM_METHODS, n=3, cutoff=0.0)
            raise UsageError(
                f"unknown method {name!r} for camlens segment (CAM methods only); closest: {', '.join(close)}"
            )
    if args.classes is not None and any(c < 0 for c in args.classes):
        raise UsageError("--classes takes class ids (0 or more)")

    def task_of(network: Any) -> Any:
        from camlens.pipeline.targets import Segmentation

        count = len(network.labels) or int(getattr(network.model, "num_classes", 0) or 0)
        if args.classes is not None and count and max(args.classes) >= count:
            raise UsageError(f"--classes {max(args.classes)}: {network.name} has {count} classes (0-{count - 1})")
        return Segmentation(None if args.classes is None else tuple(args.classes), tuple(network.labels), count)

    return run_targets(args, methods, task_of, "class")


def run_targets(args: argparse.Namespace, methods: tuple[str, ...], task_of: Any, noun: str, report: Any = None) -> int:
    """Load the network, build the task (``task_of(network)``), run it over the images and print a report per
    image (``noun``: what a target is called; ``report(result)``: another report) and the summary; the exit
    status."""
    from camlens.errors import UsageError
    from camlens.run import (
        RunOptions,
        check_layer,
        check_output_dir,
        check_output_free,
        check_sources,
        progress_printer,
        resolve_device,
        run,
    )
    from camlens.viz.annotate import COLORMAPS

    common.check_numbers(args)
    check_sources(common.images_of(args))
    check_output_free(check_output_dir(args.output_dir))
    resolve_device(args.device)
    if args.colormap not in COLORMAPS:
        raise UsageError(f"unknown colour map {args.colormap!r}; choose from {', '.join(COLORMAPS)}")
    sources = common.images_of(args)
    network = common.network_of(args, args.network, args.weight_path)
    check_layer(network, args.layer_name)
    task = task_of(network)
    print(f"[{network.name}, weights: {network.weights}]", flush=True)
    options = RunOptions(
        methods=methods, target_layer=args.layer_name, batch_size=args.batch_size, device=args.device,
        pictures=not args.no_pictures, save_maps=args.save_maps, image_format=args.format, annotate=args.annotate,
        colormap=args.colormap, overwrite=args.overwrite, fail_fast=args.fail_fast, resume=not args.no_resume,
        layout=getattr(args, "layout", None),
    )  # fmt: skip
    on_result = report or (lambda r: _print_report(r, noun))
    try:
        summary = run(
            network, sources, args.output_dir, options, task=task, on_result=on_result,
            progress=progress_printer(), recursive=args.recursive,
            on_note=lambda note: print(f"camlens: note: {note}", file=sys.stderr, flush=True),
        )  # fmt: skip
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"stopped (in {args.output_dir}); run the same command again to do the rest (it resumes)"
        ) from None
    failures = summary.failures
    done = len(summary.results) - len(failures)
    parts = [f"explained {done} image{'s' * (done != 1)}"]
    if summary.skipped:
        parts.append(f"{summary.skipped} done before (resumed)")
    parts.append(f"{len(failures)} failed")
    files = summary.written
    written = f"wrote {files} file{'s' * (files != 1)} to {summary.output_dir}/"
    print(f"{', '.join(parts)} in {summary.seconds:.1f} s; {written}")
    if summary.tables:
        print(f"tables: {', '.join(str(t) for t in summary.tables)}")
    for failure in failures:
        print(f"camlens: error: {failure.error}", file=sys.stderr)
    return 2 if failures else 0


def _print_report(result: Any, noun: str) -> None:
    if not result.ok:
        return
    print(f"{result.path}  (layer {result.layer})")
    for target in result.targets:
        if noun == "class":
            print(f"  {noun} {target['class_id']:>3d} {target['class_name']:<24s} {100 * target['pixel_share']:5.1f}% "
                  f"of the pixels, score {target['score']:.3f}")  # fmt: skip
        else:
            print(f"  {noun} {target['prompt']!r}: similarity {target['similarity']:.4f}")
    for note in result.notes:
        print(f"  note: {note}")
    sys.stdout.flush()
