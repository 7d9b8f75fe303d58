"""Options several commands share, and turning them into a network and run options. No torch at import."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from camlens.errors import UsageError
from camlens.names import SEED_METHODS

DEFAULT_NETWORK = "efficientnet_lite0"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults (where there is one worth showing)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "%(default)" in text:
            return text
        return super()._get_help_string(action) or text


def add_images(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files or folders of images")
    parser.add_argument(
        "--image-path", action="append", default=[], metavar="IMAGE", help="an image (the seed projects' flag)"
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps or auto")
    group.add_argument("--offline", action="store_true", help="never try to download weights")
    group.add_argument(
        "--random-weights",
        action="store_true",
        help="a network without weights here runs with random ones (structure checks)",
    )
    group.add_argument("--model", default=None, metavar="FILE.py:FACTORY", help="your own model: a factory in a file")
    group.add_argument(
        "--input-size", type=int, nargs="+", default=None, metavar="SIZE",
        help="input side, or height and width, for --model (default 224)",
    )  # fmt: skip
    group.add_argument(
        "--channels", type=int, default=None, metavar="N",
        help="input channels (1: grey, 4 or more: bands; default: the model's first convolution's); images are "
        "read with that many: grey, RGBA, a TIFF with a page per channel, or a .npy array H x W x C",
    )  # fmt: skip
    group.add_argument(
        "--mean", type=float, nargs="+", default=None,
        help="input mean, one per channel (or one for all; default ImageNet's for 3 channels, else 0)",
    )  # fmt: skip
    group.add_argument(
        "--std", type=float, nargs="+", default=None,
        help="input std, one per channel (or one for all; default ImageNet's for 3 channels, else 1)",
    )  # fmt: skip
    group.add_argument(
        "--bands", type=int, nargs=3, default=None, metavar="B",
        help="the three channels (0-based) the pictures show as red, green and blue (default: the first three)",
    )  # fmt: skip
    group.add_argument("--labels", default=None, help="class names file, one per line, for --model")


def add_picture_options(parser: argparse.ArgumentParser, default_dir: str = "results") -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--output-dir", default=default_dir, help="where the pictures and tables go")
    group.add_argument("--format", choices=("jpg", "png"), default="jpg", help="picture file format")
    group.add_argument("--overwrite", action="store_true", help="replace files that exist already")


def add_explain_options(parser: argparse.ArgumentParser, per_network_layer: bool = False) -> None:
    group = parser.add_argument_group("explanation")
    group.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="METHOD",
        help=f"methods to run, or 'all' (default: {' '.join(SEED_METHODS)}); 'camlens methods' lists them",
    )
    if per_network_layer:
        group.add_argument(
            "--layer-name",
            action="append",
            default=[],
            metavar="[NETWORK=]LAYER",
            help="target layer, for every network or for one (default: automatic)",
        )
    else:
        group.add_argument("--layer-name", default=None, help="dotted layer name (default: automatic)")
    group.add_argument("--class-id", type=int, default=None, help="class to explain (default: the predicted one)")
    group.add_argument("--topk", type=int, default=5, help="how many predictions to report")


def images_of(args: argparse.Namespace) -> list[str]:
    given = list(args.images) + list(args.image_path)
    if not given:
        raise UsageError(f"no image given: camlens {args.command} IMAGE [IMAGE ...]")
    return given


def methods_of(args: argparse.Namespace) -> tuple[str, ...]:
    """The methods asked for, checked against the registry (``all`` expands to every method)."""
    from camlens.catalog import AUTO_METHOD
    from camlens.names import METHODS, SEED_METHODS, VIT_ONLY_METHODS

    asked = list(args.methods or SEED_METHODS)
    if "all" in asked:  # every built-in method that applies to any network (legrad: ViTs only, name it)
        asked = [m for m in METHODS if m not in VIT_ONLY_METHODS]
    for name in asked:
        if name not in (*METHODS, AUTO_METHOD):  # checked against the torch-free names: a typo costs no torch import
            import difflib

            close = difflib.get_close_matches(name, [*METHODS, AUTO_METHOD], n=3, cutoff=0.0)
            raise UsageError(f"unknown method {name!r}; closest: {', '.join(close)}")
    return tuple(dict.fromkeys(asked))


def add_metrics_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics", nargs="+", default=[], metavar="METRIC",
        help="faithfulness metrics of every map, per image (columns metric_<method>/<metric> of the results "
        "table), e.g. deletion insertion average_drop; 'camlens evaluate --list-metrics' lists them",
    )  # fmt: skip
    parser.add_argument("--metric-steps", type=int, default=50, help="steps of the deletion / insertion curves")


def metrics_of(args: argparse.Namespace, masks: bool = False) -> tuple[str, ...]:
    """The metrics asked for, checked against the torch-free names (those needing object masks only with ``masks``)."""
    import difflib

    from camlens.names import MASK_METRICS, METRICS

    for name in args.metrics:
        if name not in METRICS:
            close = difflib.get_close_matches(name, METRICS, n=3, cutoff=0.0)
            raise UsageError(f"unknown metric {name!r}; closest: {', '.join(close)}")
        if name in MASK_METRICS and not masks:
            raise UsageError(f"{name} needs object boxes: use 'camlens evaluate --boxes FILE.json'")
    if getattr(args, "metric_steps", 2) < 2:
        raise UsageError("--metric-steps must be at least 2")
    return tuple(dict.fromkeys(args.metrics))


def check_numbers(args: argparse.Namespace) -> None:
    if getattr(args, "topk", 1) < 1:
        raise UsageError("--topk must be at least 1")
    if getattr(args, "batch_size", 1) < 1:
        raise UsageError("--batch-size must be at least 1")
    size = getattr(args, "input_size", None)
    if size is not None:
        if len(size) > 2:
            raise UsageError(f"--input-size takes a side or a height and a width, not {len(size)} numbers")
        if min(size) < 8:
            raise UsageError(f"--input-size {' '.join(map(str, size))} is too small (at least 8 pixels a side)")
    channels = getattr(args, "channels", None)
    if channels is not None and not 1 <= channels <= 1024:
        raise UsageError(f"--channels {channels}: give a count from 1 to 1024")
    bands = getattr(args, "bands", None)
    if bands is not None and min(bands) < 0:
        raise UsageError("--bands are 0-based channel indices: none can be negative")
    if args.std is not None and any(v <= 0 for v in args.std):
        raise UsageError("--std values must be positive")
    if args.labels is not None and not Path(args.labels).is_file():
        raise UsageError(f"labels file {args.labels} does not exist")


def spec_of(args: argparse.Namespace, name: str | None, weight_path: str | None) -> Any:
    """The :class:`camlens.run.NetworkSpec` that ``--network``/``--model``/``--weight-path`` and the input
    options describe (what the local and the Ray engine build the network from)."""
    from camlens.run import NetworkSpec

    labels = None
    if args.labels is not None:
        text = Path(args.labels).read_text(encoding="utf-8")
        labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    return NetworkSpec(
        args.model or name or DEFAULT_NETWORK,
        weight_path,
        offline=True if args.offline else None,
        input_size=None if args.input_size is None else (args.input_size[0], args.input_size[-1]),
        mean=None if args.mean is None else tuple(args.mean),
        std=None if args.std is None else tuple(args.std),
        labels=labels,
        random_weights=bool(getattr(args, "random_weights", False)),
        channels=getattr(args, "channels", None),
        bands=None if getattr(args, "bands", None) is None else tuple(args.bands),
    )


def network_of(args: argparse.Namespace, name: str | None, weight_path: str | None) -> Any:
    """Load the network of :func:`spec_of`, warning when it runs with random weights."""
    network = spec_of(args, name, weight_path).build()
    if network.weights.startswith("random"):
        import sys

        print(f"camlens: warning: {network.name} runs with random weights: its maps mean nothing", file=sys.stderr)
    return network
