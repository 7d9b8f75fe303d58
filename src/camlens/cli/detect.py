"""``camlens detect``: explain every box of an object detector, through :func:`camlens.run.run` with the detection
task (:class:`camlens.pipeline.detections.Detections`). No torch at import."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from camlens.cli import common

DETECTORS = (
    "fasterrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn_v2, fasterrcnn_mobilenet_v3_large_fpn, maskrcnn_resnet50_fpn, "
    "keypointrcnn_resnet50_fpn, retinanet_resnet50_fpn, fcos_resnet50_fpn, ssd300_vgg16, "
    "ssdlite320_mobilenet_v3_large, yolov8n ... yolo11x"
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "detect",
        help="explain every box of an object detector (files or folders)",
        description="Explain an object detector box by box: per image a picture with every box drawn and "
        "labelled, one picture per box and method (the box's class score explained), and tables (results.jsonl "
        "per image, boxes.csv per image and box).",
        formatter_class=common.HelpFormatter,
    )
    common.add_images(parser)
    parser.add_argument("--network", default=None, help=f"a detector: {DETECTORS} (or --model)")
    parser.add_argument(
        "--weights", "--weight-path", dest="weight_path", default=None, metavar="FILE",
        help="the detector's state dict (default: torchvision's checkpoint in the torch cache, if there)",
    )  # fmt: skip
    group = parser.add_argument_group("explanation")
    group.add_argument(
        "--methods", nargs="+", default=["gradcam"], metavar="METHOD",
        help="CAM methods (gradcam, gradcam++, layercam, hirescam, eigencam ...), odam, drise, guided_backprop, "
        "guided_gradcam",
    )  # fmt: skip
    group.add_argument("--score-threshold", type=float, default=0.5, help="explain the boxes scoring at least this")
    group.add_argument("--max-detections", type=int, default=20, help="explain at most this many boxes per image")
    group.add_argument(
        "--boxes", default=None, metavar="FILE.json",
        help='reference boxes per image, matched to the detector\'s by IoU: {"image.jpg": [[x1, y1, x2, y2] or '
        '{"box": [x1, y1, x2, y2], "label": ID}, ...]} in image pixels',
    )  # fmt: skip
    group.add_argument(
        "--target", default="score", choices=("score", "x1", "y1", "x2", "y2", "objectness"),
        help="what of each box is explained",
    )  # fmt: skip
    group.add_argument("--masks", type=int, default=1000, help="D-RISE's random masks per image")
    group.add_argument("--layer-name", default=None, help="dotted layer name (default: every FPN level fused)")
    common.add_picture_options(parser)
    group = parser.add_argument_group("run")
    group.add_argument("--annotate", action="store_true", help="caption pictures: box, method, colour bar")
    group.add_argument("--colormap", default="jet", help="jet, viridis, inferno, magma, turbo or gray")
    group.add_argument("--save-maps", action="store_true", help="also write <image>-<network>-maps.npz (compact)")
    group.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    group.add_argument("--fail-fast", action="store_true", help="stop at the first bad image")
    group.add_argument(
        "--recursive", action="store_true", help="search the folders' sub-folders too (default: the folder's own files)"
    )
    group.add_argument(
        "--no-resume", action="store_true", help="redo images the output folder's results table holds already"
    )
    common.add_model_options(parser)
    for action in parser._actions:
        if action.dest == "input_size":
            action.help = "torchvision detectors: resize each photo to this side (default: the detector's own)"
    parser.set_defaults(handler=main, no_pictures=False)
    return parser


def methods_of(args: argparse.Namespace) -> tuple[str, ...]:
    """The methods asked for, checked against the torch-free names."""
    import difflib

    from camlens.errors import UsageError
    from camlens.names import CAM_METHODS, GUIDED_BACKPROP, GUIDED_GRADCAM

    known = [*CAM_METHODS, "odam", "drise", GUIDED_BACKPROP, GUIDED_GRADCAM]
    for name in args.methods:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.0)
            raise UsageError(f"unknown method {name!r} for camlens detect; closest: {', '.join(close)}")
    return tuple(dict.fromkeys(args.methods))


def main(args: argparse.Namespace) -> int:
    from camlens.cli.segment import run_targets
    from camlens.errors import UsageError

    if args.network is None and args.model is None:
        raise UsageError(f"camlens detect needs --network NAME ({DETECTORS}) or --model FILE.py:FACTORY")
    methods = methods_of(args)
    if not 0.0 <= args.score_threshold <= 1.0 and args.boxes is None:
        raise UsageError(f"--score-threshold must be between 0 and 1, not {args.score_threshold}")
    if args.max_detections < 1:
        raise UsageError("--max-detections must be at least 1")
    if args.masks < 1:
        raise UsageError("--masks must be at least 1")
    if args.input_size is not None and len(args.input_size) != 1:
        raise UsageError("camlens detect: --input-size takes one side (the detector keeps the photo's shape)")
    side = None if args.input_size is None else int(args.input_size[0])
    references = None
    if args.boxes is not None:
        from camlens.pipeline.detections import read_boxes

        references = read_boxes(args.boxes)

    def task_of(network: Any) -> Any:
        from camlens.detection import is_detector
        from camlens.pipeline.detections import Detections

        if not is_detector(network.model, network.adapter):
            if args.model is None:
                raise UsageError(f"{network.name} is not a detector: camlens detect takes {DETECTORS}")
            raise UsageError(
                f"camlens does not know how to read boxes from a {type(network.model).__name__}: let the factory "
                "return (model, camlens.detection.DetectorAdapter(forward)) (docs/guide/detection.md)"
            )
        if network.channels != 3:
            raise UsageError(f"camlens detect takes RGB detectors; {network.name} reads {network.channels} channels")
        return Detections(
            args.score_threshold, args.max_detections, references, tuple(network.labels), args.target,
            side, args.masks,
        )  # fmt: skip

    return run_targets(args, methods, task_of, "box", report=print_boxes)


def print_boxes(result: Any) -> None:
    """The per-image report: the layer, a line per explained box, the notes."""
    if not result.ok:
        return
    print(f"{result.path}  (layer {result.layer})")
    for box in result.targets:
        where = ", ".join(f"{box[c]:.0f}" for c in ("x1", "y1", "x2", "y2"))
        if box["score"] is None:
            print(f"  box {box['box']:>2d} reference [{where}]: no output box matches it (IoU {box['iou']:.2f})")
        else:
            print(f"  box {box['box']:>2d} {box['class_name']:<20s} score {box['score']:.3f}  [{where}]")
    if not result.targets:
        print("  no box explained")
    for note in result.notes:
        print(f"  note: {note}")
    sys.stdout.flush()
