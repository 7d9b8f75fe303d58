"""``camlens explain``: parse, call :func:`camlens.run.run`, print."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from camlens.cli import common


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "explain",
        help="explain images (files or folders) with one network",
        description="Explain images with one network: the seeds' six pictures per image, and a results table.",
        formatter_class=common.HelpFormatter,
    )
    common.add_images(parser)
    parser.add_argument(
        "--network", default=None, help="torchvision or timm name (default: efficientnet_lite0, bundled)"
    )
    parser.add_argument("--weight-path", default=None, help="state dict or checkpoint for the network")
    common.add_explain_options(parser)
    parser.add_argument(
        "--layout",
        choices=("nchw", "nhwc", "tokens"),
        default=None,
        help="how the target layer's output is laid out: (B, C, H, W), (B, H, W, C) or (B, N, C) tokens "
        "(default: decided from the model and the shape)",
    )
    parser.add_argument(
        "--text", nargs="+", default=None, metavar="PROMPT",
        help="image-text model (--model FILE.py:FACTORY, or --network open_clip:ARCH): explain each image's cosine "
        "similarity with each prompt (one picture per prompt and method, prompts.csv a row per image and prompt)",
    )  # fmt: skip
    clips = parser.add_argument_group(
        "video and volumes",
        "with a network whose input is (B, C, T, H, W) (its first convolution 3-D: r3d_18, mc3_18, r2plus1d_18, "
        "s3d, swin3d_t, a 3-D CNN) each file is a clip: a video (.gif; .mp4, .avi, .mov, .mkv, .webm with PyAV: "
        "pip install camlens[video]) or a volume (.npy, D x H x W or C x D x H x W); per clip and method an "
        "animated overlay (.gif) and a frame strip (.png), per volume a montage of slices (.png)",
    )
    clips.add_argument(
        "--frames", type=int, default=None, metavar="T",
        help="frames taken from each clip, evenly spaced, the first and the last included (default: 16 of a "
        "video's, all of a shorter video's, all of a volume's slices)",
    )  # fmt: skip
    clips.add_argument(
        "--frame-folders", action="store_true",
        help="each folder given is one clip, its image files (in name order) the frames (default: a folder holds "
        "clip files)",
    )  # fmt: skip
    common.add_picture_options(parser)
    group = parser.add_argument_group("run")
    group.add_argument(
        "--annotate", action="store_true", help="caption pictures: class, probability, method, colour bar"
    )
    group.add_argument("--colormap", default="jet", help="jet, viridis, inferno, magma, turbo or gray")
    group.add_argument("--save-maps", action="store_true", help="also write <image>-<network>-maps.npz (compact)")
    group.add_argument(
        "--no-pictures", action="store_true", help="write only the maps (compact, one file per batch) and the table"
    )
    group.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    group.add_argument("--fail-fast", action="store_true", help="stop at the first bad image")
    group.add_argument(
        "--recursive", action="store_true", help="search the folders' sub-folders too (default: the folder's own files)"
    )
    group.add_argument(
        "--no-resume", action="store_true", help="redo images the output folder's results table holds already"
    )
    group.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: threads in this process; ray: Ray Data actors (pip install camlens[ray]; RAY_ADDRESS joins "
        "a cluster)",
    )
    group.add_argument("--workers", type=int, default=None, help="--engine ray: actors (default: per GPU, else CPUs/2)")
    group.add_argument("--json", action="store_true", help="print one JSON object per image instead of the report")
    group.add_argument(
        "--grid",
        nargs="?",
        const="png,svg,pdf",
        default=None,
        metavar="FORMATS|PATH",
        help="also write one figure of every image (rows) x method (columns) with one colour bar and captions "
        "naming network, layer and class: --grid writes <output-dir>/grid.png, .svg and .pdf; --grid png,pdf "
        "chooses the formats; --grid fig/cats.pdf writes that file (needs matplotlib; --engine local)",
    )
    add_progress_option(group)
    common.add_metrics_option(parser)
    common.add_model_options(parser)
    parser.set_defaults(handler=main_with_progress)
    return parser


def main(args: argparse.Namespace) -> int:
    from camlens.errors import UsageError
    from camlens.run import (
        CLASSIFICATION,
        RunOptions,
        check_layer,
        check_output_dir,
        check_output_free,
        check_sources,
        done_count,
        progress_printer,
        resolve_device,
        run,
    )

    if args.text is not None:
        return _explain_text(args)
    common.check_numbers(args)
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    methods = common.methods_of(args)
    metrics = common.metrics_of(args)
    check_sources(common.images_of(args))  # a file that is not there fails before torch or a model is loaded
    if args.engine == "ray":
        from camlens.run_ray import import_ray

        import_ray()  # before loading anything: says which extra to install
    check_output_free(check_output_dir(args.output_dir))  # another run writing there: say so before loading
    if args.engine == "local":
        resolve_device(args.device)
    grid = None
    if args.grid is not None:
        from camlens.render import GridCollector, grid_target
        from camlens.viz.grid import pyplot

        if args.engine != "local":
            raise UsageError("--grid needs --engine local (the Ray engine sends back no pictures)")
        try:
            grid_base, grid_formats = grid_target(args.grid, args.output_dir)
            pyplot()
        except (ValueError, ImportError) as error:
            raise UsageError(str(error)) from None
        grid = GridCollector(list(methods), args.colormap)
    from camlens.viz.annotate import COLORMAPS

    if args.colormap not in COLORMAPS:
        raise UsageError(f"unknown colour map {args.colormap!r}; choose from {', '.join(COLORMAPS)}")
    sources = common.images_of(args)
    network = common.network_of(args, args.network, args.weight_path)
    check_layer(network, args.layer_name)
    task = _clip_task(args, network)
    if not args.json:
        print(f"[{network.name}, weights: {network.weights}]", flush=True)
    if "gradcam" in methods and task is CLASSIFICATION:
        _note_gradcam(network, args.layer_name)
    if args.model and not args.weight_path:
        print(
            f"camlens: warning: no --weight-path: {network.name} runs with the weights its factory gives it "
            "(random, unless the factory loads some)",
            file=sys.stderr,
        )
    options = RunOptions(
        methods=methods,
        target_layer=args.layer_name,
        class_id=args.class_id,
        topk=args.topk,
        batch_size=args.batch_size,
        device=args.device,
        pictures=not args.no_pictures,
        save_maps=args.save_maps,
        image_format=args.format,
        annotate=args.annotate,
        colormap=args.colormap,
        overwrite=args.overwrite,
        fail_fast=args.fail_fast,
        resume=not args.no_resume,
        metrics=metrics,
        metric_steps=args.metric_steps,
        layout=args.layout,
    )
    noun = "image" if task is CLASSIFICATION else "clip"
    show = (lambda result: _print_json(result, network.name)) if args.json else _print_report
    if grid is not None:
        shown = show

        def show(result: Any) -> None:
            grid.add(result)
            shown(result)
    try:
        summary = run(
            network,
            sources,
            args.output_dir,
            options,
            on_result=show,
            progress=progress_printer(),
            engine=args.engine,
            workers=args.workers,
            recursive=args.recursive,
            on_note=lambda note: print(f"camlens: note: {note}", file=sys.stderr, flush=True),
            task=task,
        )
    except KeyboardInterrupt:
        done, total = done_count(network.name, sources, args.output_dir, options, args.recursive, task)
        if total <= 1:
            raise
        raise KeyboardInterrupt(
            f"{done} of {total} {noun}s done (in {args.output_dir}); "
            "run the same command again to do the rest (it resumes)"
        ) from None
    failures = summary.failures
    if not args.json:
        done = len(summary.results) - len(failures)
        parts = [f"explained {done} {noun}{'s' * (done != 1)}"]
        if summary.skipped:
            parts.append(f"{summary.skipped} done before (resumed)")
        parts.append(f"{len(failures)} failed")
        rate = len(summary.results) / summary.seconds if summary.seconds > 0 else 0.0
        files = summary.written
        print(
            f"{', '.join(parts)} in {summary.seconds:.1f} s ({rate:.1f} {'img' if noun == 'image' else 'clips'}/s); "
            f"wrote {files} file{'s' * (files != 1)} to {summary.output_dir}/"
        )
        if summary.tables:
            print(f"table{'s' * (len(summary.tables) > 1)}: {', '.join(str(t) for t in summary.tables)}")
    if grid is not None:
        figures = grid.save(network.name, grid_base, grid_formats)
        if summary.skipped:
            print(f"camlens: note: the grid leaves out {summary.skipped} image(s) done before; pass --no-resume "
                  "to include them", file=sys.stderr)  # fmt: skip
        if figures and not args.json:
            print(f"grid: {', '.join(str(f) for f in figures)}")
    for failure in failures:
        print(f"camlens: error: {failure.error}", file=sys.stderr)
    return 2 if failures else 0


def _explain_text(args: argparse.Namespace) -> int:
    """``--text``: the prompts' similarity maps, through the run with the text task."""
    from camlens.cli.segment import run_targets
    from camlens.errors import UsageError

    if args.network is None and args.model is None:
        raise UsageError("--text needs an image-text model: --model FILE.py:FACTORY or --network open_clip:ARCH")
    refused = {
        "--engine ray": args.engine != "local",
        "--grid": args.grid is not None,
        "--metrics": bool(args.metrics),
        "--json": args.json,
        "--class-id": args.class_id is not None,
    }
    for flag, given in refused.items():
        if given:
            raise UsageError(f"--text does not take {flag}")
    prompts = tuple(dict.fromkeys(p for p in args.text if p.strip()))
    if not prompts:
        raise UsageError("--text needs at least one prompt that is not blank")
    methods = tuple(dict.fromkeys(args.methods or ["gradcam"]))

    def task_of(network: Any) -> Any:
        from camlens.errors import check_names
        from camlens.pipeline.targets import TextPrompts
        from camlens.text import available_text_methods

        try:
            check_names(methods, available_text_methods(), where=" for --text")
        except ValueError as error:
            raise UsageError(str(error)) from None
        return TextPrompts(prompts)

    return run_targets(args, methods, task_of, "prompt")


def _clip_task(args: argparse.Namespace, network: Any) -> Any:
    """The clip task when the network takes clips (``(B, C, T, H, W)``), else image classification; the options
    that do not apply to the one chosen refused in one line."""
    from camlens.errors import UsageError
    from camlens.pipeline.clips import ClipClassification, takes_clips
    from camlens.run import CLASSIFICATION

    if not takes_clips(network.model):
        for flag, given in (("--frames", args.frames is not None), ("--frame-folders", args.frame_folders)):
            if given:
                raise UsageError(
                    f"{flag} is for clips: {network.name} takes images (a network whose first convolution is 3-D "
                    "takes clips)"
                )
        return CLASSIFICATION
    refused = {
        "--engine ray": args.engine != "local",
        "--grid": args.grid is not None,
        "--metrics": bool(args.metrics),
    }
    for flag, given in refused.items():
        if given:
            raise UsageError(f"{network.name} takes clips: camlens explain does not take {flag} with clips")
    return ClipClassification(args.frames, args.frame_folders)


def add_progress_option(group: Any) -> None:
    group.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars of the long methods (forward passes done, time left) and of the sanity check's steps "
        "on stderr (default: when stderr is a terminal; each perturbation method's cost is noted either way, "
        "--no-progress silences both)",
    )


def main_with_progress(args: argparse.Namespace) -> int:
    """:func:`main` with the progress that ``--progress`` asks for."""
    from camlens.progress import reporting

    with reporting(progress_of(args)):
        return main(args)


def progress_of(args: argparse.Namespace) -> Any:
    """What ``--progress`` asks for: notes of the perturbation methods' cost, bars on a terminal or when asked."""
    from camlens.progress import TqdmProgress

    if args.progress is False:
        return False
    bars = bool(args.progress) or sys.stderr.isatty()
    return TqdmProgress(bars=bars)


def _note_gradcam(network: Any, layer: str | None) -> None:
    """One note naming ``auto`` where Grad-CAM is known to mislead (a class-token ViT's LayerNorm)."""
    import torch

    from camlens.auto import gradcam_note

    parameter = next(network.model.parameters(), None)
    x = torch.zeros(1, network.channels, *network.input_size, device=None if parameter is None else parameter.device)
    try:
        note = gradcam_note(network.model, x, layer)
    except (RuntimeError, ValueError):  # the model fails on this input: the run itself says so, per image
        return
    if note:
        print(f"camlens: note: {note}", file=sys.stderr, flush=True)


def _print_report(result: Any) -> None:
    if not result.ok:
        return
    print(f"{result.path}")
    for rank, (class_id, label, p) in enumerate(result.top, 1):
        print(f"  {rank}. {label:<30s} {p:6.3f}  (class {class_id})")
    explained = "" if result.class_id is None else f"class {result.class_id} ({result.class_name}), "
    print(f"  explained: {explained}score {result.score:.3f}, layer {result.layer}")
    if getattr(result, "kind", ""):
        unit = "slices" if result.kind == "volume" else "frames"
        print(f"  {result.kind}: {result.frames} of its {result.source_frames} {unit}")
    if result.layout and not result.layout.startswith("nchw"):
        print(f"  layout: {result.layout}")
    if result.guided_rule:
        print(f"  guided rule: {result.guided_rule}")
    for note in result.notes:
        print(f"  note: {note}")
    sys.stdout.flush()


def _print_json(result: Any, network: str) -> None:
    record = result.record(network)
    record.pop("key")
    record.pop("source")
    print(json.dumps(record), flush=True)
